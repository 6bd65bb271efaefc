"""Peak RSS of `foylectl analyze` on a file of many tiny lines (issue 24: memory per byte).

Memory must follow bytes, not lines: 8 MiB of blank lines is 8 million bad
lines, and a batch that keeps one object per line held them all (1.13 GB).
Prints one JSON object: the shape, the bytes, the exit status and the peak
RSS (the child's ru_maxrss) in MB.

    python hack/line_shape_rss.py                      # 8 MiB of "\\n"
    python hack/line_shape_rss.py --line '{}' --mib 9  # 9 MiB of "{}\\n"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson


def peak_rss_mb(line: bytes, mib: int, files: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        logs, state = Path(tmp, "logs"), Path(tmp, "state")
        logs.mkdir()
        count = (mib << 20) // (len(line) + 1)
        for n in range(files):
            Path(logs, f"shape-{n}.jsonl").write_bytes((line + b"\n") * count)
        cmd = [sys.executable, "-m", "controller", "analyze", "--no-learn", "--no-progress"]
        cmd += ["--logs", str(logs), "--state-dir", str(state)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        return {
            "line": line.decode(),
            "files": files,
            "bytes_per_file": count * (len(line) + 1),
            "exit": os.waitstatus_to_exitcode(status),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--line", default="", help="each line's content (default: blank)")
    parser.add_argument("--mib", type=int, default=8, help="MiB per file (default 8)")
    parser.add_argument("--files", type=int, default=1, help="files of that shape (default 1)")
    args = parser.parse_args()
    print(orjson.dumps(peak_rss_mb(args.line.encode(), args.mib, args.files)).decode())


if __name__ == "__main__":
    main()
