"""Train the plate CRNN on synthetic plates and export it to ONNX (``make train-lpr``).

    python -m lpr_train.train --minutes 30 --seed 15 --out edge/lpr/models/plate_crnn.onnx

Fixed seed; one torch thread (the machine is shared); samples are generated on the fly by one
worker process from ``synth`` (seeded per step, so the data stream is the same on every run),
never from ``../shared/lpr-data``. Writes the ONNX file and a JSON note beside it (data, seed,
steps, time, commit).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.lpr.plate_rec import ALPHABET, INPUT_H, INPUT_W, to_input_grey  # noqa: E402
from lpr_train import synth  # noqa: E402

CLASSES = len(ALPHABET) + 1  # + the CTC blank (0)
INDEX = {c: i + 1 for i, c in enumerate(ALPHABET)}
WIDTH = 128  # channels of the sequence features


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class PlateCRNN(nn.Module):
    """Conv features pooled to one row of INPUT_W/4 steps, 1-D convs for context, a class per
    step (CTC). ~0.3 M parameters (~1.2 MB as float32), ~32 M multiply-adds a crop: small
    enough to train on one shared core and to run beside PP-OCR on a lane's core."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_block(1, 16),
            nn.MaxPool2d(2),  # 16 x 64
            *_block(16, 32),
            nn.MaxPool2d(2),  # 8 x 32
            *_block(32, 64),
            *_block(64, 64),
            nn.MaxPool2d((2, 1)),  # 4 x 32
            *_block(64, 96),
            nn.MaxPool2d((2, 1)),  # 2 x 32
            nn.Conv2d(96, WIDTH, (2, 3), padding=(0, 1), bias=False),  # 1 x 32
            nn.BatchNorm2d(WIDTH),
            nn.ReLU(True),
        )
        self.context = nn.Sequential(
            nn.Conv1d(WIDTH, WIDTH, 3, padding=1),
            nn.ReLU(True),
            nn.Dropout(0.1),
            nn.Conv1d(WIDTH, WIDTH, 3, padding=2, dilation=2),
            nn.ReLU(True),
        )
        self.head = nn.Conv1d(WIDTH, CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1 x H x W → N x T x C logits."""
        f = self.features(x).squeeze(2)
        out: torch.Tensor = self.head(self.context(f) + f).transpose(1, 2)
        return out


class Exported(nn.Module):
    """The model as shipped: probabilities (softmax over classes), N x T x C."""

    def __init__(self, net: PlateCRNN) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=2)


def normalise_t(grey: torch.Tensor) -> torch.Tensor:
    """torch twin of ``plate_rec.normalise`` (uint8 N x H x W → float N x 1 x H x W)."""
    x = grey.float()
    mean = x.mean(dim=(1, 2), keepdim=True)
    std = x.std(dim=(1, 2), keepdim=True, unbiased=False)
    return ((x - mean) / (std + 8.0)).unsqueeze(1)


class SynthStream(IterableDataset[tuple[np.ndarray, np.ndarray, int]]):
    """Batches of synthetic crops; batch ``i`` comes from seed (seed, i), so the stream does not
    depend on timing."""

    def __init__(self, seed: int, batch: int, start: int = 0) -> None:
        self.seed, self.batch, self.start = seed, batch, start

    def __iter__(self) -> Any:
        i = self.start
        while True:
            rng = np.random.default_rng((self.seed, i))
            xs = np.empty((self.batch, INPUT_H, INPUT_W), np.uint8)
            labels: list[int] = []
            lengths = np.empty(self.batch, np.int64)
            for j in range(self.batch):
                crop, text = synth.sample(rng)
                xs[j] = to_input_grey(crop)
                labels += [INDEX[c] for c in text]
                lengths[j] = len(text)
            yield xs, np.array(labels, np.int64), lengths
            i += 1


def export(net: PlateCRNN, path: Path) -> None:
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, INPUT_H, INPUT_W)
    torch.onnx.export(
        Exported(net),
        (dummy,),
        str(path),
        input_names=["image"],
        output_names=["probs"],
        dynamic_axes={"image": {0: "n"}, "probs": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )


def init_from_onnx(net: PlateCRNN, path: Path) -> None:
    """Start from a shipped model (its checkpoint is not kept): the export folds each
    BatchNorm into the conv before it, so the convs take the folded weights and bias and each
    BatchNorm becomes the identity plus that bias (train with ``freeze_bn``)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if any(n.op_type == "BatchNormalization" for n in model.graph.node):
        raise ValueError(f"{path}: BatchNorm not folded; load its checkpoint instead")
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d))]
    if len(convs) != len(layers):
        raise ValueError(f"{path}: {len(convs)} convs, the network has {len(layers)}")
    mods = list(net.modules())
    with torch.no_grad():
        for node, layer in zip(convs, layers, strict=True):
            w = torch.from_numpy(init[node.input[1]].copy())
            b = torch.from_numpy(init[node.input[2]].copy()) if len(node.input) > 2 else None
            layer.weight.copy_(w.reshape(layer.weight.shape))
            if layer.bias is not None:
                layer.bias.copy_(b if b is not None else torch.zeros_like(layer.bias))
                continue
            bn = mods[mods.index(layer) + 1]
            assert isinstance(bn, nn.BatchNorm2d)
            assert bn.running_mean is not None and bn.running_var is not None
            bn.weight.fill_(1.0)
            bn.bias.copy_(b if b is not None else torch.zeros_like(bn.bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)


def freeze_bn(net: nn.Module) -> None:
    """BatchNorm layers keep their statistics (and act as the affine layers they are)."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time)")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=ROOT / "edge/lpr/models/plate_crnn.onnx")
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "build/lpr_train/plate_crnn.pt")
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    ap.add_argument("--init-onnx", type=Path,
                    help="start from this exported model (BatchNorm frozen as folded)")
    ap.add_argument("--export-every", type=int, default=500, help="steps between exports")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    net = PlateCRNN()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    step = 0
    prior_minutes = 0.0
    resumed: dict[str, Any] = {}
    if args.resume and args.checkpoint.is_file():
        state = resumed = torch.load(args.checkpoint, weights_only=False)  # our own file
        prior_minutes = float(state.get("minutes", 0.0))
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    elif args.init_onnx is not None:
        init_from_onnx(net, args.init_onnx)
    frozen = args.init_onnx is not None or bool(resumed.get("frozen_bn"))
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    loader = DataLoader(
        SynthStream(args.seed, args.batch, start=step), batch_size=None, num_workers=1
    )
    params = sum(p.numel() for p in net.parameters())
    print(f"parameters {params}, classes {CLASSES}", flush=True)
    t0 = time.monotonic()
    budget = args.minutes * 60
    first = step
    smooth = 0.0
    net.train()
    if frozen:
        freeze_bn(net)
    for xs, labels, lengths in loader:
        x = normalise_t(xs)
        # a slow cosine decay over the planned budget keeps late steps stable
        frac = (
            min(1.0, (time.monotonic() - t0) / budget)
            if not args.steps
            else ((step - first) / args.steps)
        )
        for g in opt.param_groups:
            g["lr"] = float(args.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac))))
        logits = net(x)  # N x T x C
        logp = logits.log_softmax(2).transpose(0, 1)  # T x N x C
        t = torch.full((x.shape[0],), logp.shape[0], dtype=torch.long)
        loss = ctc(logp, labels, t, lengths)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        smooth = 0.98 * smooth + 0.02 * loss.item() if step > first + 1 else loss.item()
        if step % 25 == 0:
            print(f"step {step} loss {smooth:.3f} {time.monotonic() - t0:.0f}s", flush=True)
        done = (args.steps and step - first >= args.steps) or (
            not args.steps and time.monotonic() - t0 >= budget
        )
        if step % args.export_every == 0 or done:
            args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "net": net.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "minutes": prior_minutes + (time.monotonic() - t0) / 60,
                    "frozen_bn": frozen,
                },
                args.checkpoint,
            )
            export(net, args.out)
            note = {
                "model": args.out.name,
                "data": "synthetic plates only (lpr_train/synth.py), generated on the fly; "
                "no image of ../shared/lpr-data",
                "seed": args.seed,
                "steps": step,
                "batch": args.batch,
                "samples_seen": step * args.batch,
                "train_minutes_this_run": round((time.monotonic() - t0) / 60, 1),
                "train_minutes_total": round(prior_minutes + (time.monotonic() - t0) / 60, 1),
                "resumed_from_step": first,
                "initialised_from": str(args.init_onnx) if args.init_onnx else None,
                "loss": round(smooth, 4),
                "lr": args.lr,
                "torch": torch.__version__,
                "commit": _commit(),
                "input": f"grey {INPUT_W}x{INPUT_H}, per-image standardised",
                "alphabet": ALPHABET,
            }
            args.out.with_suffix(".json").write_text(json.dumps(note, indent=2, ensure_ascii=False))
            net.train()
            if frozen:
                freeze_bn(net)
        if done:
            break


if __name__ == "__main__":
    main()
