"""Writes the pre-redesign checkpoint fixture (run once, with the cgh of commit 1c72669, before the redesign).

    python tests/data/checkpoints/make_fixture.py

``cgh-0.1.0-mid-epoch.pt``: a CGH run of the tests' tiny configuration (two epochs of four steps) stopped by
``train.max_steps=5``, i.e. inside its second epoch, so the file carries the epoch's partial loss sums as well as the
model, queues, optimiser and RNG states. ``cgh-0.1.0-mid-epoch.json``: the overrides; the end metrics and last
epoch record of the same run left uninterrupted; and the last epoch record of the old code resuming the file. The
loss terms of the two agree; the diagnostics differ, because the stopped run logged (and diagnosed) its last step,
step 5, which the uninterrupted run did not. tests/system/test_resume_compat.py resumes the file with today's code
and checks that it ends where the old code ended.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, for tests.helpers.TINY

import torch  # noqa: E402

from tests.helpers import TINY  # noqa: E402

OVERRIDES = [*TINY, "method.name=cgh", "optim.epochs=2", "train.log_every=2"]


def main() -> None:
    from cgh.config import load_config
    from cgh.train import pretrain

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        full = pretrain(load_config("cifar10", [*OVERRIDES, f"out_dir={tmp}/full"]))
        records = [json.loads(line) for line in (Path(tmp) / "full" / "metrics.jsonl").read_text().splitlines()]
        cut = pretrain(load_config("cifar10", [*OVERRIDES, f"out_dir={tmp}/cut", "train.max_steps=5"]))
        assert cut.status == "max_steps" and cut.step == 5, cut
        ckpt = Path(tmp) / "cut" / "checkpoints" / "last.pt"
        (HERE / "cgh-0.1.0-mid-epoch.pt").write_bytes(ckpt.read_bytes())
        resumed = pretrain(load_config("cifar10", [*OVERRIDES, f"out_dir={tmp}/cut"]), resume=True)
        assert resumed.status == "finished" and resumed.step == full.step, resumed
        cut_records = [json.loads(line) for line in (Path(tmp) / "cut" / "metrics.jsonl").read_text().splitlines()]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    expected = {
        "written_by_commit": commit,
        "overrides": OVERRIDES,
        "stopped_at_step": 5,
        "end_step": full.step,
        "end_metrics": full.metrics,
        "last_epoch_record": [r for r in records if r["kind"] == "epoch"][-1],
        "resumed_last_epoch_record": [r for r in cut_records if r["kind"] == "epoch"][-1],
    }
    (HERE / "cgh-0.1.0-mid-epoch.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
