"""GANModel (DCGAN training, discriminator and AnoGAN scores), its callbacks (sample grids,
Frechet distance, the generator's export), the generated-normals datamodule, and every
GAN-related config through the CLI."""

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from synthetic import make_mvtec_tree

from adlight.callbacks import ExportGenerator, FrechetDistance, SampleGrid
from adlight.cli import main
from adlight.data import LoaderOptions, MVTecDataModule, WithGeneratedNormals
from adlight.errors import ConfigError
from adlight.models import GANModel
from adlight.models.gan_export import export_generator
from adlight.nets import DCGANDiscriminator, DCGANGenerator, RawPixels

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZE = 32


def gan_configs() -> list[Path]:
    """Every shipped config with a GAN model or generated training images."""
    found = []
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        config = yaml.safe_load(path.read_text())
        if (config.get("model", {}).get("class_path") == "adlight.models.GANModel"
                or config.get("data", {}).get("class_path") == "adlight.data.WithGeneratedNormals"):
            found.append(path)
    return found


def nets(width=8, latent_dim=16):
    return (DCGANGenerator(latent_dim=latent_dim, image_size=SIZE, width=width),
            DCGANDiscriminator(image_size=SIZE, width=width))


def tiny_trainer(root, **kwargs):
    defaults = dict(max_epochs=1, default_root_dir=root, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                    log_every_n_steps=1)
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def data(root, **kwargs):
    return MVTecDataModule(root=str(root), image_size=SIZE, loader=LoaderOptions(batch_size=4), val_fraction=0.34,
                           **kwargs)


def calibrated(generator: DCGANGenerator) -> DCGANGenerator:
    """Set BatchNorm's running statistics from a few batches, so an untrained generator's
    eval-mode output depends on z as much as its train-mode output does."""
    for m in generator.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    generator.train()
    with torch.no_grad():
        for _ in range(8):
            generator(generator.sample_latent(64))
    return generator.eval()


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=8, n_good_test=6,
                           defects={"scratch": 3, "hole": 3}, size=SIZE)


@pytest.fixture(scope="module")
def trained(mvtec_root, tmp_path_factory):
    """A GAN fitted for 2 epochs (k = 2) with its callbacks, its checkpoint, exported
    generator, run directory and datamodule."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("gan_run")
    model = GANModel(*nets(), score="latent_search", discriminator_steps=2,
                     generator_ema_decay=0.5, latent_search_steps=3, pixel_threshold="val_f1")
    grid, frechet = SampleGrid(num_images=16), FrechetDistance(RawPixels(size=8, unit_length=False))
    trainer = tiny_trainer(root, max_epochs=2, enable_checkpointing=True,
                           callbacks=[grid, frechet, ExportGenerator()])
    datamodule = data(mvtec_root)
    trainer.fit(model, datamodule=datamodule)
    checkpoint = root / "gan.ckpt"
    trainer.save_checkpoint(checkpoint)
    return {"model": model, "trainer": trainer, "checkpoint": checkpoint, "root": root,
            "datamodule": datamodule, "grid": grid, "frechet": frechet,
            "generator_file": root / "generator.pt2"}


# ----- training ---------------------------------------------------------------------------------
def test_a_few_steps_change_both_players_with_k_discriminator_steps_per_generator_step(mvtec_root, tmp_path):
    torch.manual_seed(0)
    model = GANModel(*nets(), score="discriminator", discriminator_steps=2, pixel_threshold=None)
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=data(mvtec_root))
    assert all(not torch.equal(a, b) for a, b in zip(before_g, model.generator.parameters(), strict=True))
    assert all(not torch.equal(a, b)
               for a, b in zip(before_d, model.discriminator.parameters(), strict=True))
    # 8 training images in batches of 4: 2 D steps per epoch, 1 G step per 2 D steps
    opt_g, opt_d = (o.optimizer for o in model.optimizers())
    step = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    assert int(model.discriminator_step_count) == 4 and step(opt_d) == 4
    assert step(opt_g) == 2
    assert trainer.global_step == 6  # Lightning counts every optimiser step
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert torch.isfinite(trainer.callback_metrics[key]), key


def test_sample_grids_are_written_every_epoch_and_frechet_distance_is_measured(trained):
    trainer, history = trained["trainer"], trained["frechet"].history
    samples = Path(trainer.default_root_dir) / "samples"
    grids = sorted(samples.glob("epoch_*.png"))
    assert [g.name for g in grids] == ["epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]
    # 16 samples: a 4 x 4 grid of 32 px images with 2 px padding
    assert Image.open(grids[-1]).size == (4 * (SIZE + 2) + 2,) * 2
    first, last = (np.asarray(Image.open(g)) for g in (grids[0], grids[-1]))
    assert not np.array_equal(first, last)  # the generator learned something
    assert trained["grid"].paths == grids
    assert [epoch for epoch, _ in history] == [0, 1, 2]
    assert all(np.isfinite(value) and value > 0 for _, value in history)
    assert float(trainer.callback_metrics["train/frechet_distance"]) == pytest.approx(history[-1][1])


def test_the_frechet_feature_extractor_stays_out_of_the_checkpoint(trained):
    checkpoint = torch.load(trained["checkpoint"], weights_only=True)
    assert all(k.split(".")[0] in ("generator", "generator_ema", "discriminator", "image_threshold",
                                   "pixel_threshold", "discriminator_step_count",
                                   "trained_steps", "image_threshold_step", "pixel_threshold_step", "image_threshold_normals",
                                   "val_collector", "test_collector")
               for k in checkpoint["state_dict"]), list(checkpoint["state_dict"])
    # the Frechet curve travels as the callback's state, not the model's
    assert checkpoint["callbacks"]["FrechetDistance"]["history"] == [
        list(point) for point in trained["frechet"].history]
    assert len(checkpoint["optimizer_states"]) == 2


# ----- scores -----------------------------------------------------------------------------------
def test_latent_search_reduces_its_loss_without_touching_the_networks():
    torch.manual_seed(0)
    g, d = nets(width=16)
    model = GANModel(calibrated(g), d, latent_search_steps=40, latent_search_lr=0.05)
    target = model.generate(g.sample_latent(3, torch.Generator().manual_seed(5)))
    networks = torch.nn.ModuleList([model.generator, model.discriminator])
    before = {k: v.clone() for k, v in networks.state_dict().items()}
    with torch.inference_mode():  # as in Lightning's test loop
        found = model.latent_search(target, torch.arange(3))
    assert found.history.shape == (41, 3)
    assert (found.history[-1] < 0.6 * found.history[0]).all(), found.history[[0, -1]]
    assert torch.allclose(found.loss, found.history[-1])
    assert torch.allclose(found.loss, 0.9 * found.residual + 0.1 * found.feature_distance)
    assert all(torch.equal(v, networks.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert model.generator.training is False


def test_score_contract_and_batch_independence():
    torch.manual_seed(0)
    g, d = nets()
    model = GANModel(calibrated(g), d, latent_search_steps=5, smoothing_sigma=1.0)
    images, index = torch.rand(4, 3, SIZE, SIZE), torch.arange(10, 14)
    out = model.anomaly_outputs({"image": images, "index": index})
    assert out["score"].shape == (4,)
    assert out["anomaly_map"].shape == (4, 1, SIZE, SIZE)
    assert 0 <= out["anomaly_map"].min() and out["anomaly_map"].max() <= 1
    assert 0 <= out["reconstruction"].min() and out["reconstruction"].max() <= 1
    # an image's score depends on the image and its index, not on the rest of its batch
    alone = model.anomaly_outputs({"image": images[2:3], "index": index[2:3]})
    assert alone["score"].item() == pytest.approx(out["score"][2].item(), rel=1e-4)
    model.score_name = "discriminator"
    out = model.anomaly_outputs({"image": images})
    assert set(out) == {"score"} and out["score"].shape == (4,)
    assert torch.allclose(out["score"], -model.discriminator.eval()(images * 2 - 1))


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="score"):
        GANModel(*nets(), score="mse")
    with pytest.raises(ConfigError, match="discriminator_steps"):
        GANModel(*nets(), discriminator_steps=0)
    with pytest.raises(ConfigError, match="latent_search_weight"):
        GANModel(*nets(), latent_search_weight=2.0)
    with pytest.raises(ConfigError, match="image_size"):
        GANModel(DCGANGenerator(image_size=64, width=4), DCGANDiscriminator(image_size=32, width=4))
    with pytest.raises(ConfigError, match=r"\(N, 3, 32, 32\)"):
        GANModel(*nets(), score="discriminator").anomaly_outputs({"image": torch.rand(1, 3, 64, 64)})


# ----- checkpoints ------------------------------------------------------------------------------
def test_checkpoint_round_trip_scores_the_same(trained, tmp_path):
    model, datamodule = trained["model"], trained["datamodule"]
    trainer = tiny_trainer(tmp_path)
    trainer.test(model, datamodule=datamodule, verbose=False)
    report = model.test_report
    assert report["n_anomalous"] > 0 and 0 <= report["pixel_AUROC"] <= 1
    assert report["image_threshold_source"] == "validation split, F1-optimal"

    restored = GANModel.load_from_checkpoint(trained["checkpoint"], generator=nets()[0],
                                             discriminator=nets()[1], weights_only=True)
    assert restored.score_name == "latent_search" and restored.k == 2
    assert int(restored.discriminator_step_count) == int(model.discriminator_step_count)
    grid = trained["grid"]  # the grid's noise comes from its seed: the same for both models
    assert torch.equal(grid.noise(restored), grid.noise(model))
    assert torch.equal(restored.generate(grid.noise(restored)), model.generate(grid.noise(model)))
    frechet = FrechetDistance(RawPixels(size=8, unit_length=False))
    frechet.load_state_dict(torch.load(trained["checkpoint"], weights_only=True)["callbacks"]["FrechetDistance"])
    assert frechet.history == trained["frechet"].history
    tiny_trainer(tmp_path).test(restored, datamodule=datamodule, verbose=False)
    assert torch.allclose(restored.test_outputs.score, model.test_outputs.score, atol=1e-6)
    assert restored.test_report["pixel_AUROC"] == pytest.approx(report["pixel_AUROC"])


def raw_samples(model: GANModel, z: torch.Tensor) -> torch.Tensor:
    """Images of the trained generator itself (not its weight average), in eval mode."""
    was_training = model.generator.training
    model.generator.eval()
    with torch.no_grad():
        images = model.to_image(model.generator(z))
    model.generator.train(was_training)
    return images


def test_the_weight_average_draws_the_samples_and_loads_across_configurations(trained, mvtec_root,
                                                                              tmp_path):
    model = trained["model"]
    assert model.sampling_generator is model.generator_ema.module
    noise = trained["grid"].noise(model)
    assert not torch.allclose(model.generate(noise), raw_samples(model, noise))
    # a model without the average scores with the checkpoint's trained generator ...
    plain = GANModel.load_from_checkpoint(trained["checkpoint"], generator=nets()[0],
                                          discriminator=nets()[1], generator_ema_decay=None,
                                          weights_only=True)
    assert plain.sampling_generator is plain.generator
    assert torch.allclose(plain.generate(noise), raw_samples(model, noise), atol=1e-6)
    # ... and a model with one starts its average from a checkpoint trained without one
    # (k = 2: D's turns move G's BatchNorm statistics too)
    torch.manual_seed(2)
    unaveraged = GANModel(*nets(), score="discriminator", discriminator_steps=2, pixel_threshold=None)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(unaveraged, datamodule=data(mvtec_root))
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    averaging = GANModel.load_from_checkpoint(tmp_path / "plain.ckpt", generator=nets()[0],
                                              discriminator=nets()[1], generator_ema_decay=0.9,
                                              weights_only=True)
    assert averaging.sampling_generator is averaging.generator_ema.module
    assert torch.allclose(averaging.generate(noise), raw_samples(unaveraged, noise), atol=1e-6)


def test_fit_resumes_both_players_and_their_optimisers(trained, mvtec_root, tmp_path):
    torch.manual_seed(1)
    model = GANModel(*nets(), score="discriminator", discriminator_steps=2, pixel_threshold=None)
    trainer = tiny_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, datamodule=data(mvtec_root), ckpt_path=trained["checkpoint"])
    opt_g, opt_d = (o.optimizer for o in model.optimizers())
    step = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    # 2 epochs before (4 D, 2 G steps) + 1 epoch after (2 D, 1 G step)
    assert int(model.discriminator_step_count) == 6 and step(opt_d) == 6 and step(opt_g) == 3
    assert trainer.current_epoch == 3


# ----- generated images as training data --------------------------------------------------------
def test_generated_normals_join_the_training_split_only(trained, mvtec_root, tmp_path):
    inner = data(mvtec_root)
    wrapped = WithGeneratedNormals(data(mvtec_root), str(trained["generator_file"]), num_images=5, seed=3)
    wrapped.setup("fit")
    inner.setup("fit")
    assert len(wrapped.train_dataset) == len(inner.train_dataset) + 5
    assert wrapped.val_dataset.rows() == inner.val_dataset.rows()
    assert wrapped.test_dataset.rows() == inner.test_dataset.rows()
    assert wrapped.class_names == inner.class_names and wrapped.category == "bottle"
    item = wrapped.train_dataset[len(inner.train_dataset) + 2]
    assert item["path"] == "generated:2" and item["label"] == 0 and item["class_id"] == 0
    assert item["index"] == len(inner.train_dataset) + 2
    assert item["image"].shape == (3, SIZE, SIZE) and item["mask"].sum() == 0
    # the exported file draws what the model draws from the same seed
    expected = trained["model"].generate(
        trained["model"].sample_latent(5, torch.Generator().manual_seed(3)))
    assert torch.allclose(wrapped.train_eval_dataset()[len(inner.train_dataset)]["image"],
                          expected[0], atol=1e-6)
    evaluation = wrapped.train_eval_dataset()
    assert [evaluation[i]["index"] for i in range(len(evaluation))] == list(range(len(evaluation)))
    batch = next(iter(wrapped.train_dataloader()))
    assert batch["image"].shape[1:] == (3, SIZE, SIZE) and "mask" in batch

    rows = list(csv.DictReader(wrapped.write_split_csv(tmp_path / "split.csv").open()))
    generated = [r for r in rows if r["path"].startswith("generated:")]
    assert len(generated) == 5 and {r["split"] for r in generated} == {"train"}
    assert {r["class"] for r in generated} == {"good"}

    # deterministic from the seed; another seed gives other images
    again = WithGeneratedNormals(data(mvtec_root), str(trained["generator_file"]), num_images=5, seed=3)
    other = WithGeneratedNormals(data(mvtec_root), str(trained["generator_file"]), num_images=5, seed=4)
    assert torch.equal(again.generate(), wrapped.generate())
    assert not torch.equal(other.generate(), wrapped.generate())
    gray = WithGeneratedNormals(data(mvtec_root, channels=1), str(trained["generator_file"]), num_images=2)
    assert gray.generate().shape == (2, 1, SIZE, SIZE)
    none = WithGeneratedNormals(data(mvtec_root), None, num_images=0)
    assert len(none.train_dataset) == len(inner.train_dataset)


def test_export_writes_the_sampling_generator_and_leaves_the_model_as_it_was(trained, tmp_path):
    model = trained["model"]
    model.generator_ema.module.train()
    path = export_generator(model, tmp_path / "g.pt2")
    assert model.generator_ema.module.training  # exported from a copy
    exported = torch.export.load(path).module()
    z = model.sample_latent(6, torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.allclose(exported(z), model.generate(z), atol=1e-6)
        # the same file and seed give the same images, the ones the callback's file gives
        assert torch.equal(exported(z), torch.export.load(trained["generator_file"]).module()(z))
    # a checkpoint tested alone is exported at the end of the test
    restored = GANModel.load_from_checkpoint(trained["checkpoint"], generator=nets()[0],
                                             discriminator=nets()[1], score="discriminator",
                                             weights_only=True)
    export = ExportGenerator()
    tiny_trainer(tmp_path / "test", callbacks=[export]).test(
        restored, datamodule=trained["datamodule"], verbose=False)
    assert export.path == tmp_path / "test" / "generator.pt2"
    with torch.no_grad():
        assert torch.equal(torch.export.load(export.path).module()(z), exported(z))


def test_a_missing_or_wrong_generator_file_is_a_config_error(trained, mvtec_root, tmp_path):
    missing = tmp_path / "nope.pt2"
    with pytest.raises(ConfigError, match=f"generator_file {missing} does not exist"):
        WithGeneratedNormals(data(mvtec_root), str(missing), num_images=3).setup("fit")
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a generator")
    with pytest.raises(ConfigError, match=f"generator_file {garbage} could not be read"):
        WithGeneratedNormals(data(mvtec_root), str(garbage), num_images=3).setup("fit")
    # a training checkpoint is not the exported generator: the data layer builds no network
    with pytest.raises(ConfigError, match="is not a .pt2 file"):
        WithGeneratedNormals(data(mvtec_root), str(trained["checkpoint"]), num_images=3).setup("fit")
    renamed = tmp_path / "checkpoint.pt2"
    renamed.write_bytes(trained["checkpoint"].read_bytes())
    with pytest.raises(ConfigError, match="could not be read"):
        WithGeneratedNormals(data(mvtec_root), str(renamed), num_images=3).setup("fit")
    no_metadata = tmp_path / "identity.pt2"
    torch.export.save(torch.export.export(torch.nn.Identity(), (torch.zeros(1),)), no_metadata)
    with pytest.raises(ConfigError, match="holds no adlight generator"):
        WithGeneratedNormals(data(mvtec_root), str(no_metadata), num_images=3).setup("fit")
    with pytest.raises(ConfigError, match="generates 32 px images but the datamodule's image_size is 64"):
        WithGeneratedNormals(MVTecDataModule(root=str(mvtec_root), image_size=64),
                             str(trained["generator_file"]), num_images=3).setup("fit")
    with pytest.raises(ConfigError, match="num_images"):
        WithGeneratedNormals(data(mvtec_root), str(trained["generator_file"]), num_images=-1)
    with pytest.raises(ConfigError, match="needs a generator_file"):
        WithGeneratedNormals(data(mvtec_root), None, num_images=3)


# ----- every GAN-related config through the CLI -------------------------------------------------
def gan_overrides(run_dir):
    return [f"--model.generator.init_args.image_size={SIZE}", "--model.generator.init_args.width=8",
            f"--model.discriminator.init_args.image_size={SIZE}",
            "--model.discriminator.init_args.width=8", "--model.latent_search_steps=3",
            *common(run_dir)]


def common(run_dir):
    return ["--trainer.max_epochs=2", "--trainer.check_val_every_n_epoch=1",
            "--trainer.accelerator=cpu", f"--trainer.default_root_dir={run_dir}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def only_run_dir(root: Path) -> Path:
    reports = sorted(root.rglob("metrics.json"))
    assert len(reports) == 1, f"expected one metrics.json under {root}, got {reports}"
    return reports[0].parent


def test_every_gan_config_fits_and_tests_through_the_cli(mvtec_root, tmp_path):
    configs = {p.relative_to(CONFIGS).as_posix(): p for p in gan_configs()}
    assert {"wilmet/mvtec_dcgan.yaml", "fadaeinejad/mvtec_anogan.yaml",
            "wilmet/mvtec_ae_l2_generated.yaml"} <= set(configs)
    data_args = [f"--data.root={mvtec_root}", f"--data.image_size={SIZE}", "--data.loader.batch_size=4"]
    generator_file = None
    for name in ("wilmet/mvtec_dcgan.yaml", "fadaeinejad/mvtec_anogan.yaml"):
        run = tmp_path / name.replace("/", "_")
        main(["fit", f"--config={configs[name]}", *data_args, *gan_overrides(run)])
        run_dir = only_run_dir(run)
        report = json.loads((run_dir / "metrics.json").read_text())
        assert report["model"] == "GANModel" and 0 <= report["image_AUROC"] <= 1
        assert (run_dir / "samples" / "epoch_0002.png").exists()
        assert (run_dir / "split.csv").exists()
        if name == "fadaeinejad/mvtec_anogan.yaml":
            assert 0 <= report["pixel_AUROC"] <= 1
        else:
            assert (run_dir / "checkpoints" / "last.ckpt").exists()
            generator_file = run_dir / "generator.pt2"  # ExportGenerator, at the end of fit
            assert generator_file.exists()

    # the autoencoder with generated normals, from the DCGAN the first run wrote
    run = tmp_path / "ae_generated"
    main(["fit", f"--config={configs['wilmet/mvtec_ae_l2_generated.yaml']}",
          f"--data.datamodule.root={mvtec_root}", f"--data.datamodule.image_size={SIZE}",
          "--data.datamodule.loader.batch_size=4", f"--data.generator_file={generator_file}",
          "--data.num_images=6", f"--model.network.init_args.image_size={SIZE}", *common(run)])
    run_dir = only_run_dir(run)
    report = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= report["image_AUROC"] <= 1 and 0 <= report["pixel_AUROC"] <= 1
    rows = list(csv.DictReader((run_dir / "split.csv").open()))
    assert sum(r["path"].startswith("generated:") for r in rows) == 6


def test_the_cli_names_a_missing_generator_file(mvtec_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={CONFIGS / 'wilmet' / 'mvtec_ae_l2_generated.yaml'}",
              f"--data.datamodule.root={mvtec_root}",
              f"--data.generator_file={tmp_path / 'missing.pt2'}", *common(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "missing.pt2 does not exist" in err and "Traceback" not in err
