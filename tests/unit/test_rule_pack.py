"""Rule packs load as published: the repaired YAML defect, scalar tactics, AHQ rules, dirs and globs, ids, refusals.

The fixtures under tests/fixtures/pack/ are written for these tests (fictional tools) and reproduce
each form and each defect class of the public RMM pack (docs/semantics.md §1): ``published/`` holds
rules that load (some with a warning), ``refused/`` one file per refusal class, ``duplicate/`` two
files with one id. Every refusal is checked for its file, line, column, construct and hint.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from rmmwatch.rules import (
    RuleError,
    derived_rule_id,
    load_rule_set,
    load_rules,
    parse_rule,
    repair_data_types,
    rule_sources,
)
from tests.helpers import FIXTURES

PACK = FIXTURES / "pack"
PUBLISHED = PACK / "published"
REFUSED = PACK / "refused"
ACME = PUBLISHED / "AcmeRemote"
CREATEPROC = ACME / "rmm_AcmeRemote_createproc.yaml"
AHQ_RULE = ACME / "ahq_process.yaml"
COMET = PUBLISHED / "CometView" / "rmm_CometView_netconn.yaml"


# -- the dataTypes repair ----------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF as published"])
def test_the_packs_data_types_defect_is_repaired_in_memory_with_one_warning(newline: str) -> None:
    """``dataTypes:`` indented like ``- connectorId:`` loads, with one warning naming the file and line 8."""
    text = CREATEPROC.read_text(encoding="utf-8").replace("\n", newline)
    rule = parse_rule(text, "pack.yaml")
    assert rule.id == "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
    assert [(w.source, w.line, w.column) for w in rule.warnings] == [("pack.yaml", 8, 5)]
    assert "'dataTypes:' is indented like the '- connectorId:' item" in rule.warnings[0].message
    assert "the file is not changed" in rule.warnings[0].message


def test_the_same_file_is_refused_by_yaml_itself() -> None:
    """The fixture really is invalid YAML (so the repair is what makes it load)."""
    with pytest.raises(yaml.MarkedYAMLError) as caught:
        yaml.safe_load(CREATEPROC.read_text(encoding="utf-8"))
    mark = caught.value.problem_mark
    assert mark is not None
    assert (mark.line + 1, mark.column + 1) == (8, 5)


def test_the_repair_moves_only_the_data_types_line_two_columns() -> None:
    """Exactly one line changes, by two leading spaces; every other byte is the file's."""
    text = CREATEPROC.read_text(encoding="utf-8")
    repaired, moved = repair_data_types(text)
    assert moved == [8]
    before, after = text.split("\n"), repaired.split("\n")
    assert len(before) == len(after)
    changed = [(n + 1, a, b) for n, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [(8, "    dataTypes:", "      dataTypes:")]


@pytest.mark.parametrize(
    ("fixture", "position", "warned"),
    [
        pytest.param("not_the_data_types_defect.yaml", (5, 5), False, id="under '- connectorName:', not the defect"),
        pytest.param("data_types_defect_and_another.yaml", (8, 6), True, id="the defect and another YAML error"),
    ],
)
def test_other_invalid_yaml_is_refused_with_line_and_column(
    fixture: str, position: tuple[int, int], warned: bool
) -> None:
    """Invalid YAML that is not exactly the pack's defect is refused where it is; a repair never hides it."""
    path = REFUSED / fixture
    with pytest.raises(RuleError) as caught:
        parse_rule(path.read_text(encoding="utf-8"), str(path))
    error = caught.value
    assert (error.line, error.column) == position
    assert error.kind == "yaml"
    assert error.message.startswith("invalid YAML: ")
    assert str(error).startswith(f"{path}:{position[0]}:{position[1]}: invalid YAML")
    assert [w.line for w in error.warnings] == ([5] if warned else [])


def test_valid_yaml_with_the_same_lines_is_not_touched() -> None:
    """A valid document where ``dataTypes:`` is a sibling at the dash's column loads with no warning."""
    text = (
        "id: x\nextra:\n    requiredDataConnectors:\n    - connectorId: MicrosoftThreatProtection\n"
        "    dataTypes:\n        - DeviceProcessEvents\nquery: DeviceProcessEvents | summarize count() by DeviceId\n"
    )
    rule = parse_rule(text, "valid.yaml")
    assert rule.warnings == ()


# -- scalar tactics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tactics", "expected"),
    [
        pytest.param("tactics: CommandAndControl", ("CommandAndControl",), id="a scalar, as the pack writes it"),
        pytest.param("tactics:\n  - CommandAndControl\n  - Persistence", ("CommandAndControl", "Persistence")),
        pytest.param("tactics: [CommandAndControl]", ("CommandAndControl",), id="a flow list"),
        pytest.param("tactics: []", (), id="an empty list"),
    ],
)
def test_tactics_may_be_a_scalar_or_a_list(tactics: str, expected: tuple[str, ...]) -> None:
    """A scalar ``tactics`` is a one-item list; lists are as before."""
    text = f"id: x\nname: y\n{tactics}\nquery: DeviceProcessEvents | summarize count() by DeviceId\n"
    assert parse_rule(text).tactics == expected


@pytest.mark.parametrize(
    ("value", "position"),
    [
        pytest.param("{a: b}", (3, 21), id="a mapping"),
        pytest.param("", (3, 20), id="null"),
        pytest.param("[[T1219]]", (3, 22), id="a nested list"),
    ],
)
def test_techniques_that_are_neither_a_string_nor_strings_are_refused(value: str, position: tuple[int, int]) -> None:
    """``relevantTechniques`` must still be a string or a list of strings, located."""
    text = f"id: x\nname: y\nrelevantTechniques: {value}\nquery: DeviceProcessEvents | summarize count() by DeviceId\n"
    with pytest.raises(RuleError) as caught:
        parse_rule(text)
    assert "relevantTechniques" in caught.value.message
    assert (caught.value.line, caught.value.column) == position


def test_the_published_shape_gives_tactic_and_technique_tuples() -> None:
    """The repaired fixture's scalars become ('CommandAndControl',) and ('T1219',)."""
    rule = load_rules([str(CREATEPROC)])[0]
    assert (rule.tactics, rule.techniques) == (("CommandAndControl",), ("T1219",))


# -- the AHQ form as a rule ------------------------------------------------------------------------


def test_a_bare_ahq_query_is_a_rule_with_a_derived_id_and_a_constant_column() -> None:
    """``query:`` alone, in the AHQ form, compiles: the let's table, window, group, and the extend column last."""
    (rule,) = load_rules([str(AHQ_RULE)])
    query = rule.query
    assert rule.id == derived_rule_id("ahq_process.yaml", yaml.safe_load(AHQ_RULE.read_text())["query"])
    assert rule.name == rule.id
    assert query.table == "DeviceProcessEvents"
    assert (query.window.low, query.window.high) == (-5 * 864_000_000_000, 0)
    assert query.group_by == ("DeviceId", "DeviceName")
    assert query.output_columns() == (
        "DeviceId",
        "DeviceName",
        "FirstSeen",
        "LastSeen",
        "Report",
        "Count",
        "rmmProcessName",
    )
    assert [(c.name, c.value, c.type) for c in query.row_constants] == [("rmmProcessName", "AcmeRemote", "string")]
    assert query.required == frozenset({"AcmeRemote"})


def test_a_sentinel_rule_without_an_id_is_still_refused() -> None:
    """Only a bare query gets a derived id: a file with a ``name`` must carry its ``id``."""
    with pytest.raises(RuleError) as caught:
        parse_rule("name: y\nquery: DeviceProcessEvents | summarize count() by DeviceId\n", "r.yaml")
    assert (caught.value.line, caught.value.column) == (1, 1)
    assert "missing required key 'id'" in caught.value.message


# -- derived ids ---------------------------------------------------------------------------------


def test_derived_id_is_the_relative_path_and_a_digest_of_path_and_query() -> None:
    """The documented formula: ``<relative path>#<sha256(relative path, newline, query)[:12]>``."""
    digest = hashlib.sha256(b"Acme/x.yaml\nT | summarize count()").hexdigest()[:12]
    assert derived_rule_id("Acme/x.yaml", "T | summarize count()") == f"Acme/x.yaml#{digest}"


def test_derived_ids_do_not_depend_on_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same directory given as an absolute path, a relative path, or a copy elsewhere: the same ids."""
    absolute = {f.source.relative: f.rule.id for f in load_rule_set([str(PUBLISHED)]).files if f.rule}
    monkeypatch.chdir(PACK)
    relative = {f.source.relative: f.rule.id for f in load_rule_set(["published"]).files if f.rule}
    copy = tmp_path / "elsewhere" / "pack"
    shutil.copytree(PUBLISHED, copy)
    monkeypatch.chdir(tmp_path)
    copied = {f.source.relative: f.rule.id for f in load_rule_set(["elsewhere/pack"]).files if f.rule}
    assert absolute == relative == copied
    assert absolute["AcmeRemote/ahq_process.yaml"].startswith("AcmeRemote/ahq_process.yaml#")


def test_a_changed_query_changes_the_derived_id(tmp_path: Path) -> None:
    """Editing the query makes a new rule (its alerts get new ids); the same text keeps its id."""
    folder = tmp_path / "pack"
    folder.mkdir()
    path = folder / "q.yaml"
    path.write_text(AHQ_RULE.read_text())
    first = load_rules([str(folder)])[0].id
    assert load_rules([str(folder)])[0].id == first
    path.write_text(AHQ_RULE.read_text().replace("'AcmeRemote' \n", "'AcmeRemote2' \n"))
    assert load_rules([str(folder)])[0].id != first


# -- unique ids ----------------------------------------------------------------------------------


def test_a_duplicate_id_is_refused_naming_both_files() -> None:
    """The second file with an id already loaded is refused at its id, naming the first file and position."""
    rule_set = load_rule_set([str(PACK / "duplicate")])
    assert [f.source.relative for f in rule_set.files if f.rule] == ["first.yaml"]
    (error,) = rule_set.refused
    first, second = PACK / "duplicate" / "first.yaml", PACK / "duplicate" / "second.yaml"
    assert (error.source, error.line, error.column, error.kind) == (str(second), 2, 5, "duplicate_id")
    assert f"{first}:1:5 has the same id" in error.message
    with pytest.raises(RuleError, match="duplicate rule id"):
        load_rules([str(PACK / "duplicate")])


def test_ids_are_unique_across_every_spec(tmp_path: Path) -> None:
    """Two specs (a file and a directory) holding one id: refused across them, not per spec."""
    other = tmp_path / "again.yaml"
    other.write_text(CREATEPROC.read_text())
    rule_set = load_rule_set([str(CREATEPROC), str(tmp_path)])
    assert [e.kind for e in rule_set.refused] == ["duplicate_id"]
    assert str(CREATEPROC) in rule_set.refused[0].message


# -- files, directories, globs ---------------------------------------------------------------------


def test_a_directory_is_walked_for_yaml_and_yml_skipping_hidden_ones() -> None:
    """Every *.yaml / *.yml below, sorted; not notes.md, not the .drafts directory."""
    sources, expanded = rule_sources([str(PUBLISHED)])
    assert expanded
    assert [s.relative for s in sources] == [
        "AcmeRemote/ahq_process.yaml",
        "AcmeRemote/rmm_AcmeRemote_createproc.yaml",
        "AcmeRemote/rmm_AcmeRemote_filesig.yaml",
        "BoltDesk/rmm_BoltDesk_createproc.yml",
        "CometView/rmm_CometView_netconn.yaml",
    ]
    assert sources[0].spec == str(PUBLISHED / "AcmeRemote" / "ahq_process.yaml")
    rule_set = load_rule_set([str(PUBLISHED)])
    assert rule_set.refused == []
    assert {r.query.table for r in rule_set.rules} == {
        "DeviceProcessEvents",
        "DeviceFileCertificateInfo",
        "DeviceNetworkEvents",
    }


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param(
            "published/*/rmm_*_createproc.y*ml",
            ["AcmeRemote/rmm_AcmeRemote_createproc.yaml", "BoltDesk/rmm_BoltDesk_createproc.yml"],
            id="a glob of files",
        ),
        pytest.param("published/C*", ["CometView/rmm_CometView_netconn.yaml"], id="a glob of directories is walked"),
        pytest.param(
            "**/rmm_*_filesig.yaml", ["published/AcmeRemote/rmm_AcmeRemote_filesig.yaml"], id="a recursive glob"
        ),
    ],
)
def test_globs_name_files_and_directories(pattern: str, expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A glob's files are loaded as given, its directories walked, relative to the glob's fixed prefix."""
    monkeypatch.chdir(PACK)
    sources, expanded = rule_sources([pattern])
    assert expanded
    assert [s.relative for s in sources] == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("nothing/*.yaml", "no file matches this pattern", id="a glob matching nothing"),
        pytest.param("empty", "no *.yaml or *.yml rule file under this directory", id="a directory without rules"),
    ],
)
def test_a_spec_that_names_no_rule_is_an_error(
    spec: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo must not load zero rules silently."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no rules here")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuleError) as caught:
        load_rule_set([spec])
    assert caught.value.message == message
    assert caught.value.source == spec


def test_a_file_named_twice_is_loaded_once() -> None:
    """A file given alone and again through its directory is one rule, not a duplicate id."""
    rule_set = load_rule_set([str(CREATEPROC), str(ACME)])
    assert rule_set.refused == []
    assert len(rule_set.rules) == 3


def test_a_single_file_is_not_an_expansion() -> None:
    """Files (and bundled rules) keep the detailed ``rules check`` output: only dirs and globs expand."""
    assert rule_sources([str(CREATEPROC), "bundled:netsupport"])[1] is False


# -- every refusal: file, line, column, construct, hint -------------------------------------------------

REFUSALS = [
    pytest.param(
        "two_operators.yaml",
        (13, 30),
        [
            "two operators in a row: 'has_all' then 'has_any'",
            "`FolderPath has_any (...)`",
            "`FolderPath has_all (...)`",
        ],
        id="has_all has_any (",
    ),
    pytest.param(
        "unclosed_paren.yaml",
        (5, 11),
        ["unclosed '(' of the parenthesis in the condition of 'where', opened here", "no ')' before '|' 3 lines below"],
        id="an unbalanced (",
    ),
    pytest.param(
        "trailing_comma.yaml",
        (8, 32),
        ["trailing comma in the list of 'has_any'", "remove the ',' after 'update.acme.example'"],
        id="a trailing comma in has_any (...)",
    ),
    pytest.param(
        "missing_where.yaml",
        (6, 5),
        ["unknown tabular operator 'Sha1'", "did you mean `| where Sha1 in (...)`?", "the column is 'SHA1'"],
        id="| Sha1 in (...)",
    ),
    pytest.param(
        "network_account_upn.yaml",
        (8, 7),
        [
            "unknown column or name 'AccountUpn'; did you mean 'InitiatingProcessAccountUpn'?",
            "in 'summarize ... by'",
            "DeviceNetworkEvents has no column 'AccountUpn'",
        ],
        id="by AccountUpn over DeviceNetworkEvents",
    ),
    pytest.param(
        "inline_datatable.yaml",
        (4, 15),
        ["unsupported tabular expression 'datatable' in 'let known = ...'"],
        id="a datatable let",
    ),
]


@pytest.mark.parametrize(("fixture", "position", "texts"), REFUSALS)
def test_each_defect_of_the_pack_is_refused_at_its_place_with_a_hint(
    fixture: str, position: tuple[int, int], texts: list[str]
) -> None:
    """Each refusal names file:line:column (in the rule file), the construct, and how to fix it."""
    path = REFUSED / fixture
    rule_set = load_rule_set([str(path)])
    (error,) = rule_set.refused
    assert (error.line, error.column) == position
    assert error.kind == "kql"
    assert str(error).startswith(f"{path}:{position[0]}:{position[1]}: KQL: ")
    for text in texts:
        assert text in error.message


def test_the_refused_directory_holds_one_refusal_per_file() -> None:
    """Loading the whole directory reports every file, none of them hiding another."""
    rule_set = load_rule_set([str(REFUSED)])
    assert rule_set.rules == []
    assert len(rule_set.refused) == len(rule_set.files) == len(REFUSALS) + 2
    assert sorted(Path(e.source).name for e in rule_set.refused) == sorted(p.name for p in REFUSED.glob("*.yaml"))


# -- warnings --------------------------------------------------------------------------------------


def test_adjacent_literals_concatenate_as_in_kql_with_a_located_warning() -> None:
    """``'a' 'b'`` without a comma is the one literal 'ab' (KQL's rule), and the file says where."""
    (rule,) = load_rules([str(COMET)])
    repaired, adjacent = rule.warnings
    assert repaired.line == 5
    assert (adjacent.source, adjacent.line, adjacent.column) == (str(COMET), 17, 11)
    assert (
        "'relay.cometview.example' 'cometview.example' are one literal, 'relay.cometview.examplecometview.example'"
        in (adjacent.message)
    )
    event = {"InitiatingProcessVersionInfoCompanyName": "CometView Ltd"}
    assert rule.query.matches({**event, "RemoteUrl": "relay.cometview.examplecometview.example"})
    assert rule.query.matches({**event, "RemoteUrl": "cometview-cdn.example"})
    assert not rule.query.matches({**event, "RemoteUrl": "cometview.example"})
    assert not rule.query.matches({**event, "RemoteUrl": "relay.cometview.example"})


def test_a_refused_rule_still_reports_its_warnings() -> None:
    """The repair warning comes with the refusal of the two-operator fixture."""
    (error,) = load_rule_set([str(REFUSED / "two_operators.yaml")]).refused
    assert [(w.line, w.column) for w in error.warnings] == [(5, 5)]


def test_an_exclusion_warns_at_its_place_in_the_file() -> None:
    """Adjacent literals in an exclusion's ``where`` are concatenated too, and located in the file."""
    text = (
        "id: x\nname: y\nquery: DeviceProcessEvents | summarize count() by DeviceId\nexclusions:\n"
        "  - name: quiet\n    where: FileName in ('a.exe' 'b.exe', 'c.exe')\n"
    )
    rule = parse_rule(text, "r.yaml")
    (warning,) = rule.warnings
    assert (warning.line, warning.column) == (6, 33)
    assert rule.excluded_by({"FileName": "a.exeb.exe"}) is not None
    assert rule.excluded_by({"FileName": "a.exe"}) is None
