"""The docs cannot drift from the code: every Python snippet in README.md and docs/*.md is checked.

Each ```python block is one of three kinds, decided by the lines just above it:

* an **excerpt**: a line above says ``from example_dags/<file>.py``; the block must be a verbatim
  run of lines of that file (only a common indentation may be removed, so an excerpt from inside
  ``with DAG(...)`` can be shown unindented);
* **not run**: a ``<!-- not-run: reason -->`` comment right above (keep that rare);
* everything else is **run**: a block that defines a DAG is written to a file and imported by
  Airflow's own ``DagBag``, which must report no import error (an unknown or renamed parameter is
  an import error); any other block is executed in a fresh module with ``empirical_default``
  pointing at the emulator, so hook calls really talk to the API.

Every block must also parse with ``ast``. Beyond snippets: the parameter tables marked
``<!-- params: module.Class -->`` must list exactly the class's own parameters with the right
defaults and template flags; the connection extras, the summary keys, the test names of the
reliability table and the relative links must exist.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.conftest import DAGS_FOLDER, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXCERPT = re.compile(r"from (example_dags/[\w.-]+\.py)")
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S.*?)\s*-->")
PARAMS = re.compile(r"<!--\s*params:\s*([\w.]+)\s*-->")
QUICKSTART_DAG_ID = "empirical_quickstart"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    excerpt_of: str | None
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def source(self) -> str:
        return textwrap.dedent(self.code)

    @property
    def kind(self) -> str:
        if self.excerpt_of:
            return "excerpt"
        if self.not_run:
            return "not-run"
        try:
            tree = ast.parse(self.source)
        except SyntaxError:
            return "unparsable"  # test_every_python_snippet_parses reports it
        return "dag" if defines_dag(tree) else "api"


def python_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() != "```python":
            index += 1
            continue
        start = index
        end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```"), None)
        assert end is not None, f"{path.name}:{start + 1}: unclosed ```python block"
        above = [line for line in lines[max(0, start - 4) : start] if line.strip()][-2:]
        excerpt = next((m.group(1) for line in above if (m := EXCERPT.search(line))), None)
        not_run = next((m.group(1) for line in above[-1:] if (m := NOT_RUN.search(line))), None)
        blocks.append(Block(path, start + 1, "\n".join(lines[start + 1 : end]) + "\n", excerpt, not_run))
        index = end + 1
    return blocks


def defines_dag(tree: ast.AST) -> bool:
    """A `DAG(...)` call or a function decorated with `@dag`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == "DAG") or (
                isinstance(func, ast.Attribute) and func.attr == "DAG"
            ):
                return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(target, ast.Name) and target.id == "dag":
                    return True
    return False


BLOCKS = [block for path in DOCS for block in python_blocks(path)]


def _of_kind(kind: str) -> list[Any]:
    return [pytest.param(b, id=b.name) for b in BLOCKS if b.kind == kind]


def test_the_docs_have_snippets_of_every_kind() -> None:
    kinds = {block.kind for block in BLOCKS}
    assert {"excerpt", "dag", "api"} <= kinds, kinds
    not_run = [block.name for block in BLOCKS if block.kind == "not-run"]
    assert len(not_run) <= 3, f"keep not-run snippets rare: {not_run}"


@pytest.mark.parametrize("block", [pytest.param(b, id=b.name) for b in BLOCKS])
def test_every_python_snippet_parses(block: Block) -> None:
    try:
        ast.parse(block.source, filename=block.name)
    except SyntaxError as exc:
        pytest.fail(f"{block.name}: {exc}")


# -- excerpts --


@pytest.mark.parametrize("block", _of_kind("excerpt"))
def test_excerpts_are_verbatim_lines_of_their_example_dag(block: Block) -> None:
    assert block.excerpt_of is not None
    source = ROOT / block.excerpt_of
    assert source.is_file(), f"{block.name} claims to come from {block.excerpt_of}, which does not exist"
    wanted = block.code.rstrip("\n").split("\n")
    lines = source.read_text(encoding="utf-8").splitlines()
    for start in range(len(lines) - len(wanted) + 1):
        window = lines[start : start + len(wanted)]
        if textwrap.dedent("\n".join(window)) == "\n".join(wanted):
            return
    pytest.fail(f"{block.name} is not a verbatim excerpt of {block.excerpt_of}: copy it again from the file")


# -- DAG definitions: imported by Airflow's DagBag --


def _dagbag(path: Path) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag

        return DagBag(dag_folder=str(path), include_examples=False)
    return DagBag(dag_folder=str(path))


@pytest.mark.parametrize("block", _of_kind("dag"))
def test_dag_snippets_import_without_errors(block: Block, tmp_path: Path) -> None:
    path = tmp_path / f"docs_snippet_{block.line}.py"
    path.write_text(block.source, encoding="utf-8")
    bag = _dagbag(path)
    assert bag.import_errors == {}, f"{block.name}: {next(iter(bag.import_errors.values()))}"
    assert bag.dag_ids, f"{block.name}: DagBag found no DAG in the snippet"
    for dag_id, dag in bag.dags.items():  # not get_dag(): on Airflow 3 it asks the metadata DB
        assert dag.tasks, f"{block.name}: DAG {dag_id} has no task"


@pytest.mark.e2e
def test_readme_quickstart_dag_runs(empirical_conn: Emulator) -> None:
    """The README's minimal DAG, run for real (`dag.test()`) against the emulator."""
    from tests.airflow_helpers import load_dags, task_states, xcoms

    (block,) = [b for b in BLOCKS if b.kind == "dag" and f'dag_id="{QUICKSTART_DAG_ID}"' in b.code]
    assert block.path.name == "README.md"
    path = DAGS_FOLDER / "docs_readme_quickstart.py"  # dag.test() on 3.3 wants the configured folder
    path.write_text(block.source, encoding="utf-8")
    try:
        empirical_conn.queue_runs(RunScript(queued_for=0.0, run_for=0.0))  # judged before deferring
        bag = load_dags(str(DAGS_FOLDER))  # the whole folder, as dag.test() on 3.3 serializes a bundle
        assert bag.import_errors == {}
        dag_run = bag.get_dag(QUICKSTART_DAG_ID).test()
    finally:
        path.unlink()
    assert task_states(dag_run) == {"run_tests": "success"}
    pushed = xcoms(dag_run, "run_tests")
    (run,) = empirical_conn.runs
    assert pushed["test_run_id"] == run["id"] and pushed["return_value"]["outcome"] == "success"
    assert pushed["test_run_url"] == f"{empirical_conn.url}/demo/test-runs/{run['id']}"


# -- everything else: executed, talking to the emulator --


@pytest.mark.parametrize("block", _of_kind("api"))
def test_api_snippets_run_against_the_emulator(block: Block, empirical_conn: Emulator) -> None:
    # quick runs that fail some tests, so snippets that branch on failed tests take that branch
    empirical_conn.set_default_script(RunScript(outcome="failed", queued_for=0.1, run_for=0.5))
    module = types.ModuleType(f"docs_snippet_{block.line}")
    code = compile(block.source, block.name, "exec")
    exec(code, module.__dict__)


# -- parameter tables --


def _table_after(lines: list[str], start: int) -> list[list[str]]:
    """Rows (cells) of the markdown table that starts after line `start`, header and rule dropped."""
    index = start + 1
    while index < len(lines) and not lines[index].startswith("|"):
        index += 1
    rows = []
    while index < len(lines) and lines[index].startswith("|"):
        rows.append([cell.strip() for cell in lines[index].strip().strip("|").split("|")])
        index += 1
    return rows[2:]


def _param_tables() -> list[Any]:
    found = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if match := PARAMS.search(line):
                name = f"{path.relative_to(ROOT)}:{number + 1}"
                found.append(pytest.param(match.group(1), _table_after(lines, number), id=name))
    return found


def _class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(import_module(module), name)  # type: ignore[no-any-return]


def _inherited_params(cls: type) -> set[str]:
    names: set[str] = set()
    for base in cls.__mro__[1:]:
        init = base.__dict__.get("__init__")
        if init is not None:
            names |= set(inspect.signature(init).parameters)
    return names


def test_there_are_parameter_tables() -> None:
    documented = {param.values[0] for param in _param_tables()}
    assert {
        "airflow_provider_empirical.operators.empirical.EmpiricalTriggerTestRunOperator",
        "airflow_provider_empirical.operators.empirical.EmpiricalCancelTestRunOperator",
        "airflow_provider_empirical.sensors.empirical.EmpiricalTestRunSensor",
        "airflow_provider_empirical.triggers.empirical.EmpiricalTestRunTrigger",
    } <= documented


@pytest.mark.parametrize(("dotted", "rows"), _param_tables())
def test_parameter_tables_match_the_signatures(dotted: str, rows: list[list[str]]) -> None:
    cls = _class(dotted)
    own = {
        name: param
        for name, param in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
    }
    templated = set(getattr(cls, "template_fields", ()))
    documented = []
    for cells in rows:
        assert len(cells) >= 4, f"{dotted}: a row needs parameter | templated | default | meaning: {cells}"
        name_cell, templated_cell, default_cell = cells[:3]
        match = re.fullmatch(r"`(\w+)`", name_cell)
        assert match, f"{dotted}: first cell must be one `parameter`, got {name_cell!r}"
        name = match.group(1)
        documented.append(name)
        if name not in own:
            assert name in _inherited_params(cls), f"{dotted}: documents `{name}`, which it does not take"
            continue
        assert templated_cell in ("yes", "no"), f"{dotted}.{name}: templated must be yes or no"
        assert (templated_cell == "yes") == (name in templated), f"{dotted}.{name}: templated is wrong"
        default = own[name].default
        if default_cell == "required":
            assert default is inspect.Parameter.empty, f"{dotted}.{name} is not required: default {default!r}"
            continue
        literal = re.fullmatch(r"`([^`]+)`", default_cell)
        if literal is None:
            continue  # prose such as "Airflow's" or "[operators] default_deferrable"
        try:
            value = ast.literal_eval(literal.group(1))
        except (ValueError, SyntaxError):
            continue
        assert default == value and type(default) in (type(value), float), (
            f"{dotted}.{name}: the docs say default {literal.group(1)}, the code has {default!r}"
        )
    assert len(documented) == len(set(documented)), f"{dotted}: a parameter is listed twice"
    missing = [name for name in own if name not in documented]
    assert not missing, f"{dotted}: parameters missing from the docs table: {missing}"


def test_readme_parameter_names_exist() -> None:
    from airflow_provider_empirical.validation import TRIGGER_FIELDS

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Parameters", 1)[1].split("\n## ", 1)[0]
    known: set[str] = set()
    for dotted in (
        "airflow_provider_empirical.operators.empirical.EmpiricalTriggerTestRunOperator",
        "airflow_provider_empirical.operators.empirical.EmpiricalCancelTestRunOperator",
        "airflow_provider_empirical.sensors.empirical.EmpiricalTestRunSensor",
    ):
        cls = _class(dotted)
        known |= set(inspect.signature(cls.__init__).parameters) | _inherited_params(cls)
    names = [
        name
        for line in section.splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`(\w+)`", line.split("|")[1])
    ]
    assert names and not [name for name in names if name not in known]
    assert f"`environment` and the {len(TRIGGER_FIELDS) - 1} other API fields" in section


# -- other facts the docs state --


def test_every_connection_extra_is_documented() -> None:
    from airflow_provider_empirical.get_provider_info import CONN_FIELDS

    for page in ("README.md", "docs/connection.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        documented = set(re.findall(r"extra `(\w+)`", text))
        assert documented == set(CONN_FIELDS), f"{page}: extras {sorted(documented)} != {sorted(CONN_FIELDS)}"


def test_every_summary_key_is_in_the_readme() -> None:
    from airflow_provider_empirical.api.test_runs import TestRun
    from airflow_provider_empirical.outcome import _INTERNAL

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## XCom and the extra link", 1)[1].split("\n## ", 1)[0]
    keys = [key for key in TestRun.__annotations__ if key not in _INTERNAL]
    for key in [*keys, "url", "outcome", "rerun_of", "snoozed_tests"]:
        assert f"`{key}`" in section, f"README's XCom section does not mention summary key `{key}`"


def test_every_test_named_in_the_docs_exists() -> None:
    named = 0
    for path in DOCS:
        for module, function in re.findall(r"`(test_\w+)::(test_\w+)`", path.read_text(encoding="utf-8")):
            named += 1
            sources = sorted((ROOT / "tests").glob(f"*/{module}.py"))
            assert len(sources) == 1, f"{path.name}: no single tests/<tier>/{module}.py ({sources})"
            assert re.search(rf"^(async )?def {function}\(", sources[0].read_text(encoding="utf-8"), re.M), (
                f"{path.name}: {sources[0].relative_to(ROOT)} has no test {function}"
            )
    assert named >= 50  # docs/reliability.md names one or more tests per row


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links() -> list[tuple[Path, str]]:
    links = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        for target in LINK.findall(text):
            if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
                links.append((path, target.split("#", 1)[0]))
    return links


def test_relative_links_resolve() -> None:
    broken = [
        f"{path.name} -> {target}"
        for path, target in _relative_links()
        if not (path.parent / target).resolve().exists()
    ]
    assert not broken, broken
