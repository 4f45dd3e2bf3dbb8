"""Soak with faults (issue 9): ``.venv/bin/python -m bench.soak --minutes 5``.

Exit status 0 when every check passed, 1 when one failed, 2 when the soak could not run.
See bench/soak/README.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from bench.soak.harness import FAULT_KINDS, Config, Soak
from bench.soak.report import markdown, write
from bench.soak.services import SoakSetupError


def _pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    return float(lo), float(hi or lo)


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=5.0, help="length of the load (default 5)")
    p.add_argument("--seed", type=int, default=1, help="seeds the fault schedule and clients")
    p.add_argument("--annotators", type=int, default=32)
    p.add_argument("--overlap", type=int, default=3, help="labels wanted per comparison")
    p.add_argument("--comparisons", type=int, default=None, help="default: enough for the run")
    p.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help="kinds to inject, comma-separated (worker,redis,postgres); 'none' for none",
    )
    p.add_argument(
        "--fault-every",
        type=_pair,
        default=(20.0, 60.0),
        metavar="MIN,MAX",
        help="seconds between the end of one fault and the next (default 20,60)",
    )
    p.add_argument("--first-fault-after", type=float, default=15.0, metavar="S")
    p.add_argument(
        "--down",
        type=_pair,
        default=(2.0, 6.0),
        metavar="MIN,MAX",
        help="seconds Redis or PostgreSQL stay down (default 2,6)",
    )
    p.add_argument(
        "--think",
        type=_pair,
        default=(0.3, 1.0),
        metavar="MIN,MAX",
        help="seconds an annotator looks at a pair (default 0.3,1.0)",
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default var/soak)")
    p.add_argument("--keep", action="store_true", help="keep the temporary servers' files")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    faults = tuple(k for k in a.faults.split(",") if k and k != "none")
    unknown = set(faults) - set(FAULT_KINDS)
    if unknown:
        p.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    cfg = Config(
        minutes=a.minutes,
        seed=a.seed,
        annotators=a.annotators,
        overlap=a.overlap,
        comparisons=a.comparisons,
        faults=faults,
        fault_every=a.fault_every,
        first_fault_after=a.first_fault_after,
        down=a.down,
        think=a.think,
        keep=a.keep,
        progress=not a.no_progress,
    )
    if a.out is not None:
        cfg.out = a.out
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    soak = Soak(cfg)

    def _terminate(signum, frame):  # SIGTERM: clean up like Ctrl-C
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        soak.setup()
        soak.run()
        soak.drain()
        soak.check()
    except SoakSetupError as exc:
        print(f"soak: cannot run: {exc}", file=sys.stderr)
        soak.outcome.failures.append(f"setup: {exc}")
        soak.close()
        return 2
    except KeyboardInterrupt:
        print("\nsoak: interrupted; removing the private servers", file=sys.stderr)
        soak.close()
        return 130
    except BaseException:
        soak.outcome.failures.append("the soak itself crashed")
        soak.close()
        raise
    soak.outcome.duration_s = round(time.monotonic() - started, 1)
    soak.close()
    json_path, md_path = write(soak.outcome, Path(cfg.out))
    print()
    print(markdown(soak.outcome))
    print(f"\nreport: {json_path} and {md_path}")
    return 0 if soak.outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
