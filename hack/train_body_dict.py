"""Train the zstd dictionary that store bodies and journal accumulators are packed with.

Why a dictionary: a body is packed on its own (one row, one frame), and a
kilobyte of JSON alone deflates only about 2 times, because its keys and
structure are new to every frame; with a dictionary of what bodies look like,
zstd packs them 5 to 6 times at a third of zlib's CPU time (issue 23). The
dictionary is trained on a corpus `gen_logs.py` makes with a seed the benchmark
never uses, run through `foylectl analyze` (learning on, so Examples and
Sessions are sampled too). It is part of the stored format: a new dictionary
gets a new id and the old ones stay readable (controller/store/packing.py).

    python hack/train_body_dict.py controller/store/bodies.zdict
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.store.packing import unpack  # noqa: E402

DICT_BYTES = 16384
SEED = 99  # the benchmark's corpora use seeds 0 to 4
DICT_ID = 230001  # issue 23; a retrained dictionary takes the next id


def samples(state: Path) -> list[bytes]:
    """Every current body and every accumulator, as JSON text."""
    with sqlite3.connect(state / "store.db") as store, sqlite3.connect(state / "journal.db") as j:
        bodies = store.execute("SELECT c.body FROM objects o JOIN changes c ON c.rv = o.rv")
        accs = j.execute("SELECT acc FROM traces")
        return [bytes(unpack(blob)) for (blob,) in [*bodies, *accs]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="5MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs, state = Path(tmp) / "logs", Path(tmp) / "state"
        gen = [sys.executable, str(REPO / "hack/gen_logs.py"), str(logs), "--size", args.size]
        subprocess.run([*gen, "--seed", str(SEED)], check=True, capture_output=True)
        analyze = [sys.executable, "-m", "controller", "analyze", "--logs", str(logs)]
        isolation = ["--training-dir", str(Path(tmp) / "training")]
        absent = ["--foyle-config", str(Path(tmp) / "absent.yaml"), "--no-progress"]
        subprocess.run(
            [*analyze, "--state-dir", str(state), *isolation, *absent],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        trained = zstandard.train_dictionary(DICT_BYTES, samples(state), dict_id=DICT_ID, threads=0)
    args.out.write_bytes(trained.as_bytes())
    print(f"{args.out}: {len(trained.as_bytes())} bytes, dict id {trained.dict_id()}")


if __name__ == "__main__":
    main()
