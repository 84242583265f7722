"""The harness every bench runs on: its command line, the rounds, the medians,
the side-by-side table, the JSON file and the exit status.

Import it before anything that imports socket: importing it settles gevent
monkey-patching from the command line (patched unless ``--no-patch``), the
way a gunicorn gevent worker patches before it loads the app, because
kombu's transports and the raw clients are only cooperative when patched.

A bench script is a :class:`Bench` subclass (``flows.BrokerBench`` for the
broker benches) and ``sys.exit(harness.main(ThatBench))``.
"""
import sys

PATCHED = "--no-patch" not in sys.argv[1:]
if PATCHED:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from importlib import metadata, util  # noqa: E402
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type  # noqa: E402

#: Every bench's columns, in this order; a bench that cannot run one shows "-".
LIBS = ("kombu_green", "kombu", "raw")
Titles = Dict[str, str]
#: (metric key, other client, target kombu_green/other ratio) the project aims for.
Goals = List[Tuple[str, str, float]]
#: One round of one client: metric key -> value, plus any raw figure (seconds, counts).
Figures = Dict[str, float]


class BenchError(Exception):
    """A correctness failure: a run did not deliver what it published, say."""


class Unavailable(Exception):
    """A client that cannot be measured here: shown as n/a, not an error."""


@dataclass(frozen=True)
class Metric:
    """One row of the table: a key of the round's figures and how to show it."""

    key: str
    label: str
    higher: bool = True  # throughput: higher is better; latency: lower is
    spec: str = ",.0f"

    def title(self) -> str:
        """The row title says which way is better: the ratios read differently."""
        return f"{self.label} ({'higher' if self.higher else 'lower'} is better)"


def versions(*dists: str) -> Dict[str, str]:
    """Installed versions, read without importing the packages."""
    found = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def check_ids(ids: List[int], n: int) -> None:
    """Exactly once: the ids 0..n-1, each one time."""
    if len(ids) != n or sorted(ids) != list(range(n)):
        missing = n - len(set(ids) & set(range(n)))
        raise BenchError(f"got {len(ids)} messages for {n} sent, {missing} expected ids missing")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest rank, no interpolation: always a value that was observed."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a/b, or None where either figure is missing (a client not run, say)."""
    return None if a is None or b is None or b == 0 else a / b


def fmt(value: Optional[float], spec: str = ",.0f") -> str:
    """A figure for the table; "-" where there is none."""
    return "-" if value is None else format(value, spec)


def table(header: List[str], rows: List[List[str]]) -> str:
    """First column left-aligned, the figures right-aligned."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells: List[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def say(text: str) -> None:
    """Progress goes to stderr so that stdout holds the result alone."""
    print(text, file=sys.stderr, flush=True)


class Bench:
    """What a bench script declares; :func:`main` does the rest.

    A subclass sets the class attributes and fills in :meth:`open`,
    :meth:`metrics`, :meth:`round` and, if a run can leave anything on the
    server, :meth:`close`.
    """

    url_env = ""
    default_url = ""
    #: The clients this bench can run -> their column titles.
    titles: Titles = {}
    goals: Goals = []
    #: This bench's option defaults (``{"messages": 2000}``, say).
    defaults: Dict[str, Any] = {}
    #: The options the environment line shows.
    shown: Sequence[str] = ("messages", "repeat", "warmup")

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.display = args.url  # how the server is named on screen (no password)

    @classmethod
    def options(cls, parser: argparse.ArgumentParser) -> None:
        """Add this bench's own options."""

    @classmethod
    def invalid(cls, args: argparse.Namespace) -> Optional[str]:
        """Why these options cannot run, or None."""
        return None

    def open(self) -> Dict[str, Any]:
        """Reach the server (raising if it cannot) and return the versions to show."""
        raise NotImplementedError

    def metrics(self) -> List[Metric]:
        """The table's rows, in order."""
        raise NotImplementedError

    def round(self, lib: str, rnd: int) -> Figures:
        """Measure one client once; raise BenchError if it was not correct."""
        raise NotImplementedError

    def close(self, run: "Run") -> List[str]:
        """After the rounds: delete what was left; each leftover is an error line."""
        return []

    def notes(self) -> Tuple[List[str], Dict[str, Any]]:
        """Lines printed under the table, and what they add to the JSON."""
        return [], {}


def parser_for(cls: Type[Bench], description: str) -> argparse.ArgumentParser:
    """The options every bench takes, then the bench's own."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("--url", default=os.environ.get(cls.url_env, cls.default_url),
                        help=f"server URL (default ${cls.url_env}, else {cls.default_url})")
    parser.add_argument("-n", "--messages", type=int, default=20000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    parser.add_argument("--warmup", type=int, default=50,
                        help="unrecorded operations before each latency loop")
    parser.add_argument("--only", default=",".join(cls.titles), help="comma-separated subset of "
                        + ",".join(cls.titles))
    patch = parser.add_mutually_exclusive_group()
    patch.add_argument("--patched", action="store_true",
                       help="gevent.monkey.patch_all() first, as gunicorn's gevent worker (the default)")
    patch.add_argument("--no-patch", action="store_true", help="leave the standard library unpatched")
    parser.add_argument("--json", metavar="PATH", help="also write every figure here")
    cls.options(parser)
    parser.set_defaults(**cls.defaults)
    return parser


class Run:
    """The figures, errors and n/a clients of one invocation."""

    def __init__(self, bench: Bench, libs: List[str]) -> None:
        self.bench, self.libs = bench, libs
        self.results: Dict[str, List[Figures]] = {lib: [] for lib in libs}
        self.errors: List[str] = []
        self.unavailable: Dict[str, str] = {}

    def interleave(self) -> None:
        """Each round runs every client once, rotating who goes first; a client
        that fails is dropped for the later rounds and the others carry on."""
        titles, active = self.bench.titles, list(self.libs)
        for lib in [lib for lib in active if lib != "raw" and util.find_spec(lib) is None]:
            self.unavailable[lib] = f"{lib} is not installed (pip install -e '.[bench]')"
            active.remove(lib)
        for rnd in range(self.bench.args.repeat):
            shift = rnd % len(self.libs)
            for lib in [lib for lib in self.libs[shift:] + self.libs[:shift] if lib in active]:
                try:
                    figures = self.bench.round(lib, rnd)
                except Unavailable as exc:
                    self.unavailable[lib] = f"{exc} (round {rnd + 1})"
                    say(f"  {titles[lib]}: n/a, {self.unavailable[lib]}")
                    active.remove(lib)
                    continue
                except Exception as exc:  # one broken client must not hide the others
                    self.errors.append(f"{titles[lib]} round {rnd + 1}: {type(exc).__name__}: {exc}")
                    say("  " + self.errors[-1])
                    active.remove(lib)
                    continue
                self.results[lib].append({"round": rnd + 1, **figures})
                shown = "  ".join(f"{m.key} {fmt(figures.get(m.key), m.spec)}"
                                  for m in self.bench.metrics())
                say(f"  round {rnd + 1} {titles[lib]:<14} {shown}")

    def summary(self) -> Dict[str, Dict[str, Optional[float]]]:
        """Per client and metric, the median of the runs' figures (None without any)."""
        summary: Dict[str, Dict[str, Optional[float]]] = {}
        for lib, runs in self.results.items():
            summary[lib] = {}
            for m in self.bench.metrics():
                got = [r[m.key] for r in runs if m.key in r]
                summary[lib][m.key] = statistics.median(got) if got else None
        return summary

    def report(self, summary: Dict[str, Dict[str, Optional[float]]]) -> Tuple[Dict[str, Any], List[Any]]:
        """Print the table and the goals line; return the ratios and the goals' outcome."""
        bench, ratios, rows = self.bench, {}, []
        for m in bench.metrics():
            get = [summary.get(lib, {}).get(m.key) for lib in LIBS]
            vs = {f"kombu_green/{other}": ratio(get[0], get[LIBS.index(other)]) for other in LIBS[1:]}
            ratios[m.key] = vs
            cells = [("n/a" if lib in self.unavailable and value is None else fmt(value, m.spec))
                     if lib in self.libs else "-" for lib, value in zip(LIBS, get)]
            rows.append([m.title()] + cells + [fmt(v, ".2f") + ("x" if v is not None else "")
                                               for v in vs.values()])
        print(f"each figure is the median of {bench.args.repeat} run(s): for throughput the runs' "
              "rates, for latency the runs' p50 and p99")
        print(table(["metric"] + [bench.titles.get(lib, lib) for lib in LIBS]
                    + ["kombu_green/kombu", "kombu_green/raw"], rows))
        outcome, marks = [], []
        higher = {m.key: m.higher for m in bench.metrics()}
        for key, other, target in bench.goals:
            value = ratios[key][f"kombu_green/{other}"]
            met = None if value is None else (value >= target if higher[key] else value <= target)
            outcome.append({"metric": key, "other": other, "target": target, "ratio": value, "met": met})
            shown = "n/a" if value is None else f"{value:.3f}x, {'met' if met else 'missed'}"
            marks.append(f"{key} {'>=' if higher[key] else '<='} {target:.1f}x "
                         f"{bench.titles[other]} ({shown})")
        if marks:
            print("goals: " + "; ".join(marks))
        return ratios, outcome

    def finish(self, env: Dict[str, Any]) -> int:
        """The table, notes, n/a and ERROR lines; the JSON file; the exit status."""
        summary = self.summary()
        print()
        print(", ".join(f"{k} {v}" for k, v in env.items()))
        ratios, goals = self.report(summary)
        notes, extra = self.bench.notes()
        for note in notes:
            print(note)
        for lib, reason in self.unavailable.items():
            print(f"n/a: {self.bench.titles[lib]}: {reason}")
        for err in self.errors:
            print("ERROR: " + err)
        if self.bench.args.json:
            with open(self.bench.args.json, "w") as fh:
                json.dump({"env": env, "metrics": [asdict(m) for m in self.bench.metrics()],
                           "runs": self.results, "summary": summary, "ratios": ratios, "goals": goals,
                           "errors": self.errors, "unavailable": self.unavailable, **extra}, fh, indent=2)
        return 1 if self.errors else 0


def main(cls: Type[Bench], description: Optional[str] = None) -> int:
    """Run a bench: 0 if every run was correct, 1 if not, 2 if the server is unreachable."""
    parser = parser_for(cls, description or (sys.modules[cls.__module__].__doc__ or "").split("\n")[0])
    args = parser.parse_args()
    args.libs = [lib.strip() for lib in args.only.split(",") if lib.strip()]
    if not args.libs or set(args.libs) - set(cls.titles):
        parser.error(f"--only takes a subset of {','.join(cls.titles)}")
    if args.messages < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("-n and --repeat must be at least 1, --warmup at least 0")
    problem = cls.invalid(args)
    if problem:
        parser.error(problem)
    bench: Bench = cls(args)
    try:
        found = bench.open()
    except Exception as exc:
        say(f"cannot reach {bench.display}: {type(exc).__name__}: {exc}")
        return 2
    env = {"python": platform.python_version(), **versions("gevent", "kombu_green"), **found,
           "monkey_patched": PATCHED, **{k: getattr(args, k) for k in bench.shown},
           "server": bench.display}
    say(", ".join(f"{k} {v}" for k, v in env.items()))
    run = Run(bench, [lib for lib in LIBS if lib in args.libs])
    try:
        run.interleave()
    finally:
        try:
            run.errors.extend(bench.close(run))
        except Exception as exc:
            run.errors.append(f"could not check what the runs left on the server: {exc}")
    return run.finish(env)
