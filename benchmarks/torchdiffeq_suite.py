"""torchdiffeq's own test suite, run against hyperode through an import shim.

hyperode promises drop-in torchdiffeq compatibility (``from hyperode import odeint,
odeint_adjoint``). This script takes torchdiffeq's tests as shipped and runs them with
``import torchdiffeq`` resolving to hyperode:

1. **Shim.** In a temporary directory it writes a package ``torchdiffeq`` whose
   ``__init__.py`` re-exports hyperode's public names: ``odeint``, ``odeint_adjoint``,
   ``odeint_event`` when hyperode has it, and every other public name the test files take
   from torchdiffeq (``torchdiffeq.<name>`` or ``from torchdiffeq import <name>``, found by
   scanning them). A name hyperode lacks is left out, so the tests using it fail, and it is
   listed in the report. That directory comes first on ``PYTHONPATH``, ahead of the real
   torchdiffeq (a dev dependency installed in the venv). Each child process checks that
   ``torchdiffeq`` is the shim and that ``torchdiffeq.odeint is hyperode.odeint`` (and the
   same for every shimmed name), and the whole run aborts (exit status 2) otherwise.
2. **Tests.** The checkout's ``tests/`` folder is copied unchanged (``problems.py`` with its
   method lists as shipped) and each ``*_tests.py`` module runs in its own subprocess under
   ``unittest``, with a per-module timeout (``--timeout``, default 900 s). A custom
   ``unittest.TestResult`` records every test and every ``subTest`` outcome as it happens:
   pass / fail / error / skip, the first line of the failure message, the subTest parameters
   and the tail of the traceback. A module that times out or crashes keeps what was recorded;
   the test running at the time and the tests not reached are reported as errors. When
   hyperode itself does not import, each module reports one error, ``<import>``.
3. **Exclusions.** ``--exclude`` names tests known to inspect torchdiffeq's private autograd
   internals, which hyperode does not reproduce; by default
   ``norm_tests.TestNorms.test_adjoint_norm``, which reads ``xs.grad_fn.adjoint_options``.
   They still run, but are reported apart as "excluded (private internals)" and never count
   as failures. An entry may also name a class or a module.
4. **Report.** Prints a per-module and a per-test table and writes into ``--out`` (default
   ``benchmarks/results``) ``torchdiffeq_suite.json`` (every record; torch, hyperode and
   Python versions; the torchdiffeq commit from ``git -C <checkout> rev-parse HEAD``) and
   ``torchdiffeq_suite.md`` (counts per module and per test, failing subtests grouped by
   test and by method).

Exit status: 0 when every non-excluded test and subtest passes or is skipped, 1 otherwise,
2 when the suite cannot run at all (no tests in the checkout, shim not in effect).

Getting a torchdiffeq checkout (the pip package ships without its tests)::

    git clone https://github.com/rtqichen/torchdiffeq /path/to/torchdiffeq
    git -C /path/to/torchdiffeq checkout <commit>   # optional: a report's commit

Usage::

    python benchmarks/torchdiffeq_suite.py --checkout /path/to/torchdiffeq
    python benchmarks/torchdiffeq_suite.py --checkout DIR --only odeint_tests,api_tests
    python benchmarks/torchdiffeq_suite.py --checkout DIR --only norm_tests.TestNorms.test_norm
    python benchmarks/torchdiffeq_suite.py --checkout DIR --out /tmp/suite --timeout 300

``--checkout`` defaults to ``$TORCHDIFFEQ_CHECKOUT``. ``--only`` takes module names
(``odeint_tests``) and dotted test names (``odeint_tests.TestSolverError.test_odeint``).
The devices are those ``problems.py`` picks: CPU, and CUDA when available. The whole suite
takes one to several minutes on CPU, longer the more methods hyperode supports (gradient_tests
gradchecks every method).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import unittest
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
RESULTS = SCRIPT.parent / "results"
NAME = "torchdiffeq_suite"
#: tests that read torchdiffeq's private autograd internals (``grad_fn.adjoint_options``)
DEFAULT_EXCLUDE = ("norm_tests.TestNorms.test_adjoint_norm",)
#: shimmed whether or not the tests use them (each only when hyperode has it)
ALWAYS_SHIMMED = ("odeint", "odeint_adjoint", "odeint_event")
STATUSES = ("pass", "fail", "error", "skip")
FAILING = ("fail", "error")
CHILD_FLAG = "--child"  # first argument of the per-module subprocess (this script again)
EXIT_SHIM = 3  # a child's exit status when ``torchdiffeq`` is not the shim
MESSAGE_CHARS = 300
TRACEBACK_CHARS = 3000
OUTPUT_TAIL_CHARS = 4000
MD_MESSAGE_CHARS = 120  # in the tables of the .md (the lists and the .json have more)

SHIM_INIT = '''"""A torchdiffeq -> hyperode import shim, written by torchdiffeq_suite.py."""

import hyperode as _hyperode

WANTED = {wanted!r}
__all__ = [name for name in WANTED if hasattr(_hyperode, name)]
MISSING = [name for name in WANTED if name not in __all__]
globals().update({{name: getattr(_hyperode, name) for name in __all__}})
'''


# --------------------------------------------------------------------------- child process


def first_line(err: tuple) -> str:
    """``ExceptionType: first line of its message``, shortened."""
    etype, value, _ = err
    lines = str(value).strip().splitlines()
    text = f"{etype.__name__}: {lines[0]}" if lines else etype.__name__
    return text[:MESSAGE_CHARS]


def traceback_tail(err: tuple) -> str:
    return "".join(traceback.format_exception(*err))[-TRACEBACK_CHARS:]


def jsonable(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


class RecordingResult(unittest.TestResult):
    """Hands one record per test and per subTest outcome to ``emit`` as soon as it is known,
    and one when a test starts, so that the parent knows which test a timeout cut short.

    unittest reports a passing subTest as ``addSubTest(test, subtest, None)``; a test with a
    failing subTest gets no ``addSuccess``. A test's own status is its own outcome when that
    is not a pass, else ``fail`` (``error``) when a subTest failed (only errored)."""

    def __init__(self, emit: Callable[..., None]):
        super().__init__()
        self.emit = emit
        self._started: dict[str, float] = {}
        self._own: dict[str, tuple[str, str, str]] = {}
        self._subtests: dict[str, list[tuple[str, str]]] = {}

    def startTest(self, test):
        super().startTest(test)
        self._started[test.id()] = time.perf_counter()
        self.emit(kind="start", id=test.id())

    def stopTest(self, test):
        super().stopTest(test)
        tid = test.id()
        status, message, trace = self._own.pop(tid, ("pass", "", ""))
        subtests = self._subtests.pop(tid, [])
        failed = [(s, m) for s, m in subtests if s in FAILING]
        if status == "pass" and failed:
            status = "fail" if any(s == "fail" for s, _ in failed) else "error"
            message = failed[0][1]
        self.emit(kind="test", id=tid, status=status, message=message, traceback=trace,
                  duration_s=round(time.perf_counter() - self._started.pop(tid), 3))

    def _own_outcome(self, test, status: str, message: str = "", trace: str = "") -> None:
        if test.id() in self._started:
            self._own[test.id()] = (status, message, trace)
        else:  # setUpClass / setUpModule failures: unittest reports them on a placeholder
            self.emit(kind="test", id=test.id(), status=status, message=message,
                      traceback=trace, duration_s=0.0)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._own_outcome(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._own_outcome(test, "fail", first_line(err), traceback_tail(err))

    def addError(self, test, err):
        super().addError(test, err)
        self._own_outcome(test, "error", first_line(err), traceback_tail(err))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._own_outcome(test, "pass", "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._own_outcome(test, "fail", "unexpected success")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        parent = getattr(test, "test_case", None)  # a skipTest() inside a subTest
        if parent is not None:
            self._subtest(parent, test, "skip", f"skipped: {reason}", "")
        else:
            self._own_outcome(test, "skip", f"skipped: {reason}")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is None:
            self._subtest(test, subtest, "pass", "", "")
        else:
            status = "fail" if issubclass(err[0], test.failureException) else "error"
            self._subtest(test, subtest, status, first_line(err), traceback_tail(err))

    def _subtest(self, test, subtest, status: str, message: str, trace: str) -> None:
        self._subtests.setdefault(test.id(), []).append((status, message))
        params = {key: jsonable(value) for key, value in subtest.params.items()}
        self.emit(kind="subtest", id=test.id(), params=params, status=status,
                  message=message, traceback=trace)


def iter_tests(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def shim_problem(shim_root: Path) -> str | None:
    """Why ``import torchdiffeq`` would not be the shim in this process, or None."""
    spec = importlib.util.find_spec("torchdiffeq")
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    if origin is None or not origin.is_relative_to(shim_root.resolve()):
        return f"`import torchdiffeq` resolves to {origin}, not to the shim in {shim_root}"
    return None


def shim_identity_problem(torchdiffeq: Any, hyperode: Any) -> str | None:
    for name in ("odeint", *torchdiffeq.__all__):
        if getattr(torchdiffeq, name, None) is not getattr(hyperode, name, object()):
            return f"torchdiffeq.{name} is not hyperode.{name}"
    return None


def child_main(argv: list[str]) -> int:
    """Run one test module and write its records, one JSON object a line."""
    p = argparse.ArgumentParser(prog=f"{SCRIPT.name} {CHILD_FLAG}")
    p.add_argument("--shim", type=Path, required=True)
    p.add_argument("--records", type=Path, required=True)
    p.add_argument("module")
    p.add_argument("names", nargs="*", help="tests inside the module (default: all)")
    args = p.parse_args(argv)
    # this process is this script, so its folder heads sys.path, ahead of PYTHONPATH (the shim
    # and the tests): drop it, lest a module in it shadow one of theirs
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != SCRIPT.parent]

    with args.records.open("w") as sink:
        def emit(**record: Any) -> None:
            sink.write(json.dumps(record) + "\n")
            sink.flush()

        def import_error(what: str) -> int:
            err = sys.exc_info()
            emit(kind="test", id=f"{args.module}.<import>", status="error",
                 message=f"{first_line(err)} (importing {what})", traceback=traceback_tail(err),
                 duration_s=0.0)
            return 0

        problem = shim_problem(args.shim)
        if problem is None:
            try:
                import torch
                import torchdiffeq  # the shim, which imports hyperode

                import hyperode
            except Exception:
                return import_error("hyperode via the shim")
            problem = shim_identity_problem(torchdiffeq, hyperode)
        if problem is not None:
            print(f"FATAL: the torchdiffeq shim is not in effect: {problem}", file=sys.stderr)
            return EXIT_SHIM
        emit(kind="env", torch=torch.__version__, hyperode=hyperode.__version__,
             hyperode_file=hyperode.__file__, torchdiffeq_file=torchdiffeq.__file__,
             shimmed=list(torchdiffeq.__all__), missing=list(torchdiffeq.MISSING),
             cuda=torch.cuda.is_available(), threads=torch.get_num_threads())

        try:
            module = importlib.import_module(args.module)
        except Exception:
            return import_error(args.module)
        loader = unittest.TestLoader()
        suite = (loader.loadTestsFromNames(args.names, module) if args.names
                 else loader.loadTestsFromModule(module))
        emit(kind="collected", ids=[test.id() for test in iter_tests(suite)])
        suite.run(RecordingResult(emit))
    return 0


# --------------------------------------------------------------------------- parent process


class SuiteError(Exception):
    """The suite cannot run at all (exit status 2)."""


def names_used_by(test_files: Iterable[Path]) -> set[str]:
    """Every name the test files take from ``torchdiffeq``, public or not."""
    names: set[str] = set()
    for path in test_files:
        text = path.read_text()
        names.update(re.findall(r"\btorchdiffeq\.(\w+)", text))
        for group in re.findall(r"^\s*from\s+torchdiffeq\s+import\s+\(?([\w\s,]+)", text, re.M):
            names.update(item.split()[0] for item in group.split(",") if item.strip())
    return names


def write_shim(root: Path, wanted: Iterable[str]) -> Path:
    package = root / "torchdiffeq"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(SHIM_INIT.format(wanted=tuple(wanted)))
    return package


def checkout_commit(checkout: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_events(path: Path) -> list[dict]:
    """The records a child wrote; a line cut short by a kill is dropped."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return events


def run_module(module: str, names: list[str], work: Path, shim_root: Path, tests: Path,
               timeout: float) -> dict:
    """Run one test module in a subprocess; its outcome and records."""
    records_path, output_path = work / f"{module}.jsonl", work / f"{module}.out"
    cmd = [sys.executable, str(SCRIPT), CHILD_FLAG, "--shim", str(shim_root),
           "--records", str(records_path), module, *names]
    pythonpath = [str(shim_root), str(tests), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    start = time.perf_counter()
    with output_path.open("w") as output:
        try:
            returncode = subprocess.run(cmd, cwd=tests, env=env, stdout=output,
                                        stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            returncode = None
    wall = time.perf_counter() - start
    output_tail = output_path.read_text(errors="replace")[-OUTPUT_TAIL_CHARS:]
    if returncode == EXIT_SHIM:
        raise SuiteError(f"{module}: {output_tail.strip()}")

    events = read_events(records_path)
    records = [e for e in events if e["kind"] in ("test", "subtest")]
    if returncode == 0:
        run = "ok"
    else:  # what was cut short is an error: the test running then and those not reached
        run = "timeout" if returncode is None else f"exit {returncode}"
        why = (f"timed out after {timeout:g} s" if returncode is None
               else f"the test process exited with status {returncode}")
        done = {r["id"] for r in records if r["kind"] == "test"}
        started = [e["id"] for e in events if e["kind"] == "start"]
        collected = next((e["ids"] for e in events if e["kind"] == "collected"), [])
        if not collected and not done:
            collected = [f"{module}.<import>"]
        for tid in dict.fromkeys([*started, *collected]):
            if tid not in done:
                message = why if tid in started or tid.endswith("<import>") else f"not run: {why}"
                records.append({"kind": "test", "id": tid, "status": "error",
                                "message": message, "traceback": "", "duration_s": None})
    env_event = next((e for e in events if e["kind"] == "env"), None)
    return {"module": module, "names": names, "run": run, "returncode": returncode,
            "wall_s": round(wall, 1), "env": env_event, "output_tail": output_tail,
            "records": records}


def method_of(params: dict | None) -> str | None:
    """The solver a subTest exercised (``scipy_solver[RK45]`` for the scipy tests)."""
    if not params:
        return None
    method, solver = params.get("method"), params.get("solver")
    if solver is not None:
        return f"{method or 'scipy_solver'}[{solver}]"
    return None if method is None else str(method)


def is_excluded(test_id: str, exclude: Iterable[str]) -> bool:
    return any(test_id == entry or test_id.startswith(entry + ".") for entry in exclude)


def finish_records(result: dict, exclude: Iterable[str]) -> list[dict]:
    """A module's records with their module, test name, method and exclusion; a traceback
    is kept only the first time its test shows its message (the rest are repeats)."""
    module, out, seen = result["module"], [], set()
    for record in result["records"]:
        tid = record["id"]
        test = tid[len(module) + 1:] if tid.startswith(module + ".") else tid
        key = (tid, record["status"], record["message"])
        out.append({"module": module, "test": test, **record,
                    "traceback": "" if key in seen else record["traceback"],
                    "method": method_of(record.get("params")),
                    "excluded": is_excluded(tid, exclude)})
        seen.add(key)
    return out


def counts(records: Iterable[dict]) -> dict[str, int]:
    c = Counter(r["status"] for r in records)
    return {status: c[status] for status in STATUSES}


def summarise(modules: list[dict], records: list[dict]) -> dict:
    kept = [r for r in records if not r["excluded"]]
    tests = [r for r in kept if r["kind"] == "test"]
    subtests = [r for r in kept if r["kind"] == "subtest"]
    per_module = []
    for m in modules:
        mine = [r for r in records if r["module"] == m["module"]]
        per_module.append({
            "module": m["module"], "run": m["run"], "wall_s": m["wall_s"],
            "tests": counts(r for r in mine if r["kind"] == "test" and not r["excluded"]),
            "subtests": counts(r for r in mine if r["kind"] == "subtest" and not r["excluded"]),
            "excluded_tests": sum(r["kind"] == "test" and r["excluded"] for r in mine)})
    per_test = []
    for test in (r for r in records if r["kind"] == "test"):
        mine = [r for r in records if r["kind"] == "subtest" and r["id"] == test["id"]]
        per_test.append({"id": test["id"], "status": test["status"],
                         "excluded": test["excluded"], "message": test["message"],
                         "duration_s": test["duration_s"], "subtests": counts(mine)})
    return {"tests": counts(tests), "subtests": counts(subtests),
            "failing_tests": [t["id"] for t in tests if t["status"] in FAILING],
            "modules": per_module, "per_test": per_test}


# --------------------------------------------------------------------------- report


def text_table(headers: list[str], rows: list[list]) -> str:
    cells = [headers, *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


MODULE_HEADERS = ["module", "run", "wall s", "tests pass", "fail", "error", "skip",
                  "subtests pass", "fail", "error", "skip", "excluded"]
TEST_HEADERS = ["test", "status", "subtests pass", "fail", "error", "skip", "first failure"]
METHOD_HEADERS = ["method", "failing", "of subtests", "failing in"]


def module_rows(summary: dict) -> list[list]:
    return [[m["module"], m["run"], m["wall_s"], *m["tests"].values(), *m["subtests"].values(),
             m["excluded_tests"]] for m in summary["modules"]]


def test_rows(summary: dict, excluded: bool, width: int | None = None) -> list[list]:
    rows = []
    for t in summary["per_test"]:
        if t["excluded"] == excluded:
            message = t["message"] if t["status"] != "pass" else ""
            rows.append([t["id"], t["status"], *t["subtests"].values(),
                         shorten(message, width) if width else message])
    return rows


def verdict(summary: dict) -> str:
    tests, subtests = summary["tests"], summary["subtests"]
    return (f"{tests['pass']} of {sum(tests.values())} tests pass "
            f"({tests['fail']} fail, {tests['error']} error, {tests['skip']} skip); "
            f"{subtests['pass']} of {sum(subtests.values())} subtests pass "
            f"({subtests['fail']} fail, {subtests['error']} error, {subtests['skip']} skip); "
            "excluded tests not counted")


def params_text(params: dict, leave_out: str | None = None) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != leave_out) or "(no parameters)"


def failing_subtest_lines(records: list[dict]) -> list[str]:
    """Markdown: the failing subtests of each test, grouped by method within the test and
    by message within the method."""
    lines = []
    failing = [r for r in records if r["kind"] == "subtest" and r["status"] in FAILING]
    for tid in dict.fromkeys(r["id"] for r in failing):
        mine = [r for r in failing if r["id"] == tid]
        total = sum(r["kind"] == "subtest" and r["id"] == tid for r in records)
        lines += ["", f"### `{tid}`: {len(mine)} of {total} subtests fail", ""]
        for method in dict.fromkeys(r["method"] for r in mine):
            group = [r for r in mine if r["method"] == method]
            lines.append(f"- **{method or '(no method parameter)'}** ({len(group)})")
            for status, message in dict.fromkeys((r["status"], r["message"]) for r in group):
                same = [r for r in group if (r["status"], r["message"]) == (status, message)]
                where = "; ".join(f"`{params_text(r['params'], 'method')}`" for r in same)
                lines.append(f"  - {status}: {message or '(no message)'} ({where})")
    return lines


def method_rows(records: list[dict]) -> list[list]:
    """Per method with a failing subtest: failing / all its subtests, and the tests failing."""
    subtests = [r for r in records if r["kind"] == "subtest"]
    rows = []
    for method in sorted({r["method"] or "" for r in subtests if r["status"] in FAILING}):
        mine = [r for r in subtests if (r["method"] or "") == method]
        failing = [r for r in mine if r["status"] in FAILING]
        tests = ", ".join(sorted({r["test"] for r in failing}))
        rows.append([method or "(no method parameter)", len(failing), len(mine), tests])
    return sorted(rows, key=lambda row: -row[1])


def markdown(report: dict) -> str:
    s, records, env, shim = report["summary"], report["records"], report["versions"], report["shim"]
    kept = [r for r in records if not r["excluded"]]
    excluded = [r for r in records if r["excluded"]]
    commit = report["torchdiffeq_commit"] or "unknown (not a git checkout)"
    shim_line = (f"Shim: `torchdiffeq` re-exports hyperode's "
                 f"{', '.join(shim['shimmed']) or '(nothing)'}; wanted but not in hyperode: "
                 f"{', '.join(shim['missing']) or 'none'}.")
    if shim["private"]:
        shim_line += f" Private names the tests use (not shimmed): {', '.join(shim['private'])}."
    exclude_list = ", ".join(f"`{e}`" for e in report["exclude"]) or "empty"
    test_table = md_table(TEST_HEADERS, test_rows(s, excluded=False, width=MD_MESSAGE_CHARS))
    excluded_rows = test_rows(s, excluded=True, width=MD_MESSAGE_CHARS)
    methods = method_rows(kept)
    lines = [
        "# torchdiffeq's test suite against hyperode", "",
        f"Command: `{report['command']}`", "",
        f"torchdiffeq checkout `{report['checkout']}` at commit `{commit}`; hyperode "
        f"{env['hyperode']}, torch {env['torch']}, Python {env['python']} ({env['platform']}); "
        f"{report['wall_s']:.0f} s.", "",
        shim_line, "",
        f"**{verdict(s)}. Exit status {report['exit_status']}.**", "",
        "## Modules", "", md_table(MODULE_HEADERS, module_rows(s)), "",
        "## Tests", "", test_table, "",
        "## Excluded (private internals)", "",
        "Tests that read torchdiffeq's private autograd internals: run, not counted as "
        f"failures. Exclude list: {exclude_list}.", "",
        md_table(TEST_HEADERS, excluded_rows) if excluded_rows else "None ran.",
        *failing_subtest_lines(excluded), "",
        "## Failing subtests by method", "",
        md_table(METHOD_HEADERS, methods) if methods else "None.", "",
        "## Failing subtests by test and method",
        *(failing_subtest_lines(kept) or ["", "None."]),
    ]
    troubled = [m for m in report["modules"] if m["run"] != "ok"]
    if troubled:
        lines += ["", "## Modules that did not finish", ""]
        for m in troubled:
            lines += [f"`{m['module']}`: {m['run']}; last output:", "", "```",
                      m["output_tail"][-1500:].strip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def print_report(report: dict) -> None:
    s = report["summary"]
    print("\nPer module (excluded tests not counted):")
    print(text_table(MODULE_HEADERS, module_rows(s)))
    print("\nPer test:")
    print(text_table(TEST_HEADERS, test_rows(s, excluded=False, width=70)))
    excluded_rows = test_rows(s, excluded=True, width=70)
    if excluded_rows:
        print("\nExcluded (private internals), not counted as failures:")
        print(text_table(TEST_HEADERS, excluded_rows))
    if report["shim"]["missing"]:
        print(f"\nNot in hyperode, left out of the shim: {', '.join(report['shim']['missing'])}")
    print(f"\n{verdict(s)}")


# --------------------------------------------------------------------------- main


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def select(modules: list[str], only: list[str] | None) -> dict[str, list[str]]:
    """Module -> the tests to run in it (an empty list: the whole module)."""
    if not only:
        return {m: [] for m in modules}
    chosen: dict[str, list[str] | None] = {}
    for entry in only:
        module, _, name = entry.partition(".")
        if module not in modules:
            raise SuiteError(f"--only: no module {module!r} (there are {', '.join(modules)})")
        if not name:
            chosen[module] = None
        elif chosen.get(module, []) is not None:
            chosen.setdefault(module, []).append(name)
    return {m: names or [] for m, names in chosen.items()}


def run_suite(args: argparse.Namespace, argv: list[str]) -> dict:
    checkout = args.checkout.resolve()
    test_dir = checkout / "tests"
    modules = sorted(p.stem for p in test_dir.glob("*_tests.py"))
    if not modules:
        raise SuiteError(f"no tests/*_tests.py in {checkout}: not a torchdiffeq checkout?")
    plan = select(modules, args.only)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="torchdiffeq_suite_") as tmp:
        work = Path(tmp)
        tests = work / "tests"
        shutil.copytree(test_dir, tests, ignore=shutil.ignore_patterns("__pycache__"))
        used = names_used_by(tests.glob("*.py"))
        wanted = [*ALWAYS_SHIMMED, *sorted(n for n in used - set(ALWAYS_SHIMMED)
                                           if not n.startswith("_"))]
        shim_root = work / "shim"
        write_shim(shim_root, wanted)
        results, records = [], []
        for i, (module, names) in enumerate(plan.items(), 1):
            print(f"[{i}/{len(plan)}] {' '.join([module, *names])} ...", flush=True)
            result = run_module(module, names, work, shim_root, tests, args.timeout)
            mine = finish_records(result, args.exclude)
            del result["records"]
            results.append(result)
            records += mine
            tests_n = counts(r for r in mine if r["kind"] == "test")
            subtests_n = counts(r for r in mine if r["kind"] == "subtest")
            print(f"    {result['run']}, {result['wall_s']} s; tests {tests_n}; "
                  f"subtests {subtests_n}", flush=True)

    summary = summarise(results, records)
    env = next((m["env"] for m in results if m["env"]), None) or {}
    return {
        "command": shlex.join(["python", "benchmarks/torchdiffeq_suite.py", *argv]),
        "checkout": str(checkout),
        "torchdiffeq_commit": checkout_commit(checkout),
        "versions": {"hyperode": env.get("hyperode") or package_version("hyperode"),
                     "torch": env.get("torch") or package_version("torch"),
                     "python": platform.python_version(), "platform": platform.platform(),
                     "hyperode_file": env.get("hyperode_file")},
        "shim": {"wanted": wanted, "shimmed": env.get("shimmed", []),
                 "missing": env.get("missing", []),
                 "private": sorted(n for n in used if n.startswith("_"))},
        "exclude": args.exclude,
        "timeout_s": args.timeout,
        "wall_s": round(time.perf_counter() - started, 1),
        "exit_status": 1 if summary["failing_tests"] else 0,
        "summary": summary,
        "modules": results,
        "records": records,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [CHILD_FLAG]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    env_checkout = os.environ.get("TORCHDIFFEQ_CHECKOUT")
    p.add_argument("--checkout", type=Path, default=env_checkout, required=not env_checkout,
                   help="a clone of github.com/rtqichen/torchdiffeq (default: "
                        "$TORCHDIFFEQ_CHECKOUT)")
    p.add_argument("--only", type=parse_list, default=None,
                   help="comma-separated modules or dotted tests (default: every module)")
    p.add_argument("--exclude", type=parse_list, default=list(DEFAULT_EXCLUDE),
                   help="comma-separated tests (or classes, modules) that inspect torchdiffeq's "
                        "private internals: run, reported apart, not failures "
                        f"(default: {','.join(DEFAULT_EXCLUDE)}; '' for none)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per module (900)")
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    args = p.parse_args(argv)
    try:
        report = run_suite(args, argv)
    except SuiteError as exc:
        print(f"torchdiffeq_suite: cannot run the suite: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{NAME}.md").write_text(markdown(report))
    print(f"wrote {args.out / NAME}.json and .md; exit status {report['exit_status']}")
    return report["exit_status"]


if __name__ == "__main__":
    sys.exit(main())
