from dataclasses import replace

import numpy as np
import pytest
import torch

from mnist_edge import checkpoint as ckpt_io
from mnist_edge.augment import LOW_RES_SHARE, low_resolution, low_resolution_capture
from mnist_edge.edge import spec
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import ConfigError, DataError, OutputError
from mnist_edge.edge.evaluate import evaluate
from mnist_edge.edge.images import center_by_mass
from mnist_edge.train import RECIPES, TrainConfig, random_shift, train


def small(mnist_dir, out, **kw) -> TrainConfig:
    """A few hundred images: enough to compare weights, quick on 2 cores."""
    base = dict(epochs=1, limit=256, test_limit=100, data_dir=str(mnist_dir), output_dir=str(out))
    return TrainConfig(**{**base, **kw})


def weights(path):
    return ckpt_io.load(path).model_state


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_thousand_images_one_epoch_reach_90_percent(trained):
    ck = ckpt_io.load(trained)
    assert ck.test_accuracy >= 90.0
    assert ck.test_images == 1000
    r = evaluate(trained, load_split("test", ck.train_config["data_dir"], 1000))
    assert r.accuracy == pytest.approx(ck.test_accuracy)


def test_recipes():
    default, original = TrainConfig(), TrainConfig.from_recipe("original")
    assert (default.lr_schedule, default.augment) == ("cosine", True)
    assert default.low_res == LOW_RES_SHARE > 0 and original.low_res == 0
    assert TrainConfig.from_recipe("default") == default
    assert (original.lr_schedule, original.augment, original.weight_decay) == ("constant", False, 0)
    # the original script's flags keep their meaning under either recipe
    assert (original.epochs, original.batch_size, original.learning_rate) == (10, 64, 1e-3)
    ours = TrainConfig.from_recipe("original", lr_schedule="cosine", augment=None)
    assert ours.lr_schedule == "cosine" and ours.augment is False
    assert set(RECIPES) == {"default", "original"}
    with pytest.raises(ConfigError, match="recipe must be one of"):
        TrainConfig.from_recipe("fancy")


def test_same_seed_same_weights_other_seed_other_weights(mnist_dir, tmp_path):
    a = train(small(mnist_dir, tmp_path / "a")).checkpoint
    b = train(small(mnist_dir, tmp_path / "b")).checkpoint
    c = train(small(mnist_dir, tmp_path / "c", seed=2)).checkpoint
    assert_same_weights(weights(a), weights(b))
    assert not torch.equal(weights(a)["fc.weight"], weights(c)["fc.weight"])


def _epoch_orders(mnist_dir, out, monkeypatch, **kw) -> list[list[float]]:
    """Train and record, per epoch, which images the steps saw and in what order (an image is
    known by the sum of its normalised pixels)."""
    from mnist_edge import train as train_module

    seen, real = [], train_module._step

    def step(model, opt, scaler, xb, yb, device, use_amp):
        seen.extend(xb.double().sum(dim=(1, 2, 3)).tolist())
        return real(model, opt, scaler, xb, yb, device, use_amp)

    monkeypatch.setattr(train_module, "_step", step)
    cfg = small(mnist_dir, out, **kw)
    train(cfg)
    per_epoch = len(seen) // cfg.epochs
    return [seen[i * per_epoch : (i + 1) * per_epoch] for i in range(cfg.epochs)]


def test_every_epoch_sees_every_image_once_in_a_new_order(mnist_dir, tmp_path, monkeypatch):
    """A shuffle seeded by the seed alone (the same order every epoch) fails here; the resume
    tests cannot see it, since both of their runs would share it."""
    orders = _epoch_orders(
        mnist_dir, tmp_path / "a", monkeypatch, epochs=3, augment=False, low_res=0.0
    )
    assert len(orders[0]) == 256
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(orders[2])  # each image once
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    again = _epoch_orders(
        mnist_dir, tmp_path / "b", monkeypatch, epochs=3, augment=False, low_res=0.0
    )
    assert again == orders  # and the orders follow the seed


class Interrupt(Exception):
    pass


def stop_after_first_epoch(m):
    if m.epoch == 1:
        raise Interrupt  # as Ctrl-C would, right after the epoch's checkpoint is written


@pytest.mark.parametrize("extra", [{}, {"augment": True, "lr_schedule": "cosine"}])
def test_resumed_run_equals_uninterrupted_run(mnist_dir, tmp_path, extra):
    whole = train(small(mnist_dir, tmp_path / "whole", epochs=2, **extra))
    cfg = small(mnist_dir, tmp_path / "split", epochs=2, **extra)
    with pytest.raises(Interrupt):
        train(cfg, on_epoch=stop_after_first_epoch)
    assert ckpt_io.load(cfg.checkpoint_path).epoch == 1
    # The resumed run takes the saved recipe: flags other than epochs/paths/threads are ignored.
    resumed = train(replace(cfg, augment=False, lr_schedule="constant"), resume=True)
    assert resumed.resumed_from_epoch == 1
    assert resumed.config == cfg
    assert_same_weights(weights(whole.checkpoint), weights(resumed.checkpoint))
    assert [m.test_accuracy for m in resumed.history] == [m.test_accuracy for m in whole.history]


def test_resume_past_the_end_is_a_config_error(trained):
    cfg = TrainConfig(epochs=1, output_dir=str(trained.parent))
    with pytest.raises(ConfigError, match="already has 1 epochs"):
        train(cfg, resume=True)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"learning_rate": -0.1}, "learning rate must be a positive"),
        ({"learning_rate": float("nan")}, "learning rate must be a positive"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"lr_schedule": "step"}, "lr schedule must be one of"),
        ({"low_res": -0.1}, "low-res share must be between 0 and 1"),
        ({"low_res": 1.5}, "low-res share must be between 0 and 1"),
        ({"low_res": float("nan")}, "low-res share must be between 0 and 1"),
    ],
)
def test_nonsense_settings_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kw)


def test_limit_larger_than_the_data_is_refused(mnist_dir, tmp_path):
    with pytest.raises(DataError, match="larger than"):
        train(small(mnist_dir, tmp_path, limit=10_000_000))
    assert not (tmp_path / "mnist_cnn.pt").exists()


def test_unwritable_output_dir_is_refused_before_training(mnist_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write to the output folder"):
        train(small(mnist_dir, blocker / "out"))


def test_random_shift_moves_ink_and_keeps_background():
    x = torch.full((4, 1, 28, 28), -0.1307 / 0.3081)
    x[:, :, 14, 14] = 3.0
    out = random_shift(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    ys, xs = torch.nonzero(out[:, 0] > 0, as_tuple=True)[1:]
    assert ys.sub(14).abs().max() <= 2 and xs.sub(14).abs().max() <= 2
    assert (out > 0).sum() == 4  # one ink pixel each: nothing lost or duplicated


def _digits(mnist_dir, n):
    split = load_split("train", str(mnist_dir), n)
    return torch.from_numpy(spec.normalize(split.images))[:, None], split.images


def test_low_resolution_replaces_its_share_and_follows_the_seed(mnist_dir):
    x, _ = _digits(mnist_dir, 400)
    out = low_resolution(x, torch.Generator().manual_seed(3), 0.5)
    changed = (out != x).flatten(1).any(1)
    # binomial(400, 0.5): mean 200, sd 10; 5 sd either side
    assert 150 <= int(changed.sum()) <= 250
    assert torch.equal(out[~changed], x[~changed])  # the others are left exactly as they were
    again = low_resolution(x, torch.Generator().manual_seed(3), 0.5)
    assert torch.equal(out, again)
    assert torch.equal(low_resolution(x, torch.Generator().manual_seed(3), 0.0), x)
    every = low_resolution(x[:50], torch.Generator(), 1.0)
    assert bool((every != x[:50]).flatten(1).any(1).all())


def test_low_resolution_images_are_what_the_preprocessing_makes_of_them(mnist_dir):
    """Replaced images are MNIST-style: ink within a 20-pixel box, centred by mass, in range."""
    x, _ = _digits(mnist_dir, 60)
    out = low_resolution(x, torch.Generator().manual_seed(0), 1.0)
    pixels = torch.round((out[:, 0] * spec.STD + spec.MEAN) * 255).numpy()
    assert pixels.min() >= 0 and pixels.max() <= 255
    for p in pixels.astype("uint8"):
        ys, xs = p.nonzero()
        assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 20
        assert (center_by_mass(p[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]) == p).all()
        assert p.max() >= 254  # stretched to full contrast (a truncated 254.99 reads 254)


def test_a_low_resolution_capture_holds_the_digit_at_7_to_14_pixels(mnist_dir):
    """Dark ink on white paper, upscaled by a whole factor from a digit 7-14 pixels tall: every
    capture must downscale (by its factor) to a size between those bounds plus the margins."""
    _, images = _digits(mnist_dir, 40)
    gen = torch.Generator().manual_seed(1)
    for digit in images:
        im = low_resolution_capture(digit, gen)
        g = np.asarray(im.convert("L"), np.float32)
        assert g[0].mean() > 200 and g.min() < 128  # white paper round dark ink
        sides = [s for s in range(2, 9) if im.width % s == 0 and im.height % s == 0]
        assert any(7 + 2 <= max(im.size) // s <= 14 + 6 for s in sides), im.size


def test_a_run_saved_before_the_low_resolution_share_resumes_without_it(mnist_dir, tmp_path):
    """A checkpoint whose recipe has no `low_res` (written before it existed) trained without
    it, and resuming it must not switch it on halfway."""
    cfg = small(mnist_dir, tmp_path, epochs=2, low_res=0.0)
    with pytest.raises(Interrupt):
        train(cfg, on_epoch=stop_after_first_epoch)
    saved = ckpt_io.load(cfg.checkpoint_path)
    old_recipe = {k: v for k, v in saved.train_config.items() if k != "low_res"}
    ckpt_io.save(replace(saved, train_config=old_recipe))
    resumed = train(replace(cfg, low_res=LOW_RES_SHARE), resume=True)
    assert resumed.config.low_res == 0.0
