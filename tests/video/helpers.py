"""A tiny model trained for a few seconds on synthetic faces, and videos made of those faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fersuite.checkpoint import META_KEY
from fersuite.data.synthetic import render_faces
from fersuite.labels import CANONICAL_CLASSES
from fersuite.models.registry import create_model

SIZE = 32
MODEL = {
    "arch": "lightweight_cnn",
    "in_chans": 1,
    "input_size": SIZE,
    "width_mult": 0.25,
    "expansion_channels": 64,
    "drop_rate": 0.0,
}
#: classes far apart in the synthetic faces' geometry (mouth up/open vs down/closed) and in
#: valence: the model below tells them apart after a few seconds of training
DIFFICULTY = 0.2
PAIR = ("happy", "sad")


def train_pair_model(path: Path, steps: int = 50, seed: int = 0) -> Path:
    """A checkpoint (fersuite-train's format, centre-square card) of a lightweight CNN
    trained on ``PAIR`` synthetic faces (expression + valence/arousal); a few seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared, loaded CPU: one thread is several times faster
    try:
        return _train(path, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(path: Path, steps: int, seed: int) -> Path:
    torch.manual_seed(seed)
    faces = render_faces(1024, size=SIZE, seed=seed, difficulty=DIFFICULTY)
    keep = np.isin(faces.expression, [CANONICAL_CLASSES.index(c) for c in PAIR])
    x = torch.from_numpy(faces.images[keep]).float().div(255).sub(0.5).div(0.5).unsqueeze(1)
    y = torch.from_numpy(faces.expression[keep])
    v = torch.from_numpy(faces.valence[keep])
    a = torch.from_numpy(faces.arousal[keep])
    kwargs = {k: val for k, val in MODEL.items() if k != "arch"}
    net = create_model("lightweight_cnn", num_classes=len(CANONICAL_CLASSES), **kwargs)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        out = net(x[idx])
        loss = F.cross_entropy(out.expression, y[idx])
        loss = loss + F.mse_loss(out.valence, v[idx]) + F.mse_loss(out.arousal, a[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    # BatchNorm statistics of the final weights (the running averages lag behind this fast)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        net(x)
    net.eval()
    card = {
        "card_version": 1,
        "model_cfg": {"_target_": "fersuite.models.registry.create_model", **MODEL},
        "class_names": list(CANONICAL_CLASSES),
        "has_va": True,
        "input": {"size": SIZE, "channels": 1, "mean": [0.5], "std": [0.5]},
        "face_crop": {"kind": "center"},
    }
    state = {f"net.{k}": t for k, t in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, META_KEY: card}, path)
    return path


def switch_frames(n: int, seed: int = 1) -> tuple[list[np.ndarray], list[str]]:
    """``n`` 64×64 RGB frames of synthetic faces (rendered at the model's size, a new face
    each frame, unseen in training): ``PAIR[0]`` for the first half, ``PAIR[1]`` for the
    second; and the expression of each frame."""
    faces = render_faces(16 * n, size=SIZE, seed=seed, difficulty=DIFFICULTY)
    frames, labels = [], []
    for k in range(n):
        want = PAIR[0] if k < n // 2 else PAIR[1]
        idx = np.flatnonzero(faces.expression == CANONICAL_CLASSES.index(want))[k]
        big = np.kron(faces.images[idx], np.ones((2, 2), dtype=np.uint8))  # 2× nearest
        frames.append(np.repeat(big[:, :, None], 3, axis=2))
        labels.append(want)
    return frames, labels


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Frames (RGB) as a video: MJPG in .avi, mp4v in .mp4 (both written by this OpenCV)."""
    import cv2

    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path
