"""Hostile input: generated bad cluster and experiment YAML (random structures, shell
metacharacters, `../`, newlines, unicode, very long names, YAML tags) gets a clean answer.

Cluster files go through the real command line in-process (`vclab check FILE`): exit 0 or 2 (1 only
with --strict), never a traceback, and with exit 2 every stderr line is `file:line[:col]: ...`
(`field: message` where the problem has a field; YAML syntax errors have none). Experiment files
go through `load_experiment` (`vclab check` takes clusters only): a ConfigError whose problems
all name a file and a line, never another exception. Names in the user's words must match the
name rule, which is what keeps them out of shells and `ip` arguments.

The second half (issue 17) goes family by family: a sample per family in tests/data/hostile must
exit 2 at its line with its words; special files are refused unread; the loader itself is fuzzed
(alias bombs, nesting, any text, anchors anywhere, tags); times and rates must be finite and in
range; a link's schedule must alternate down and up; subnets must be usable on a LAN, and the
overlap check finds exactly the overlapping pairs.

About 2,500 generated cases by default (~90 s); VCLAB_HYPOTHESIS_EXAMPLES scales every property
as in test_spec.py (300 = the default)."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.emoji import Emoji
from ruamel.yaml import YAML
from typer.testing import CliRunner

from vclab import cli
from vclab.errors import ConfigError, Problem
from vclab.experiments.loader import LoadedExperiment, load_experiment
from vclab.topology.loader import cluster_from_text, load_cluster
from vclab.topology.plan import build_plan
from vclab.topology.render import ovs_commands

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
DEFAULT_EXPERIMENT = ROOT / "experiments" / "default.yaml"
NAME_RULE = "use 1 to 15 lowercase letters, digits, '-' or '_', starting with a letter"
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,14}")

SCALE = int(os.environ.get("VCLAB_HYPOTHESIS_EXAMPLES", "300")) / 300


def examples(n: int) -> settings:
    return settings(max_examples=max(1, round(n * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Bugs this file found that are not fixed yet. Each is pinned by a strict xfail test at the end;
# while it is listed here the properties tolerate exactly its symptom and nothing else. When a
# fix lands, the pin fails as XPASS: delete its marker and its entry here.
KNOWN: set[str] = set()
LINK_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_./#-]{0,63}")

_SAFE = YAML(typ="safe")
_BASE = _SAFE.load(DEFAULT.read_text())
_BASE_EXPERIMENT = _SAFE.load(DEFAULT_EXPERIMENT.read_text())
_BASE_EXPERIMENT["topology"] = "cluster.yaml"
RUNNER = CliRunner()

# ---- hostile values ---------------------------------------------------------------------------

CANARY = "/tmp/vcb-hostile-canary"  # a YAML tag that executed anything would create it
_HOSTILE = [
    "a;rm -rf /", "$(reboot)", "`id`", "x|y", "x&y", "a&&b", "a>b", "a<b", "(a)", "$HOME", "${IFS}",
    "../../etc/passwd", "../", "..", "/", "x\ny", "x\r\ny", "tor-a\n", "esx1 ", " esx1", "a b",
    "名前", "ésx1", "Esx1", "\u202eesx1", "e\u200bsx1", "-rf", "--help", "vcs0", "vcv1", "lo", "",
    "a" * 16, "a" * 300, "x" * 5000, "*alias", "&anchor", "{}", "[]", "null", "~", "0x10", "1e999",
    ".inf", ".nan", "\t", "\\", "'", '"', "%s%n", "\x7f", "a/b", "a:b", "a#b", "a: b", "- a", "?",
    "!!python/object/apply:os.system", f"!!python/object/apply:os.system [touch {CANARY}]",
    "tor-a/tor-b#1", "esx1.vmnic0", "x\x00y", "\x1b[31mred",
]
_METACHARS = ";|&$()`<>\\'\" \n\t../*?[]{}!#%~=,:"
hostile = st.one_of(
    st.sampled_from(_HOSTILE),
    st.text(alphabet=_METACHARS + "abz09-_", max_size=24),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24),
    st.builds(lambda s, n: s * n, st.sampled_from(["a", "../", ";", "é"]), st.integers(15, 2000)),
)
_WORDS = ["tor-a", "tor-b", "esx1", "esx2", "web1", "vcenter", "array1", "management", "vmotion",
          "storage-a", "vm-web", "vmnic0", "datastore1", "rstp", "10Gbit", "4GiB", "5ms", "25%",
          "10.10.0.0/24", "1s", "down", "fail", "probe", "iscsi"]
scalars = st.one_of(hostile, st.sampled_from(_WORDS), st.integers(), st.floats(), st.booleans(),
                    st.none())
_CLUSTER_KEYS = ["cluster", "mechanism", "defaults", "networks", "switches", "links", "hypervisors",
                 "storage", "management", "vms", "vlan", "subnet", "kind", "share", "priority",
                 "between", "name", "rate", "delay", "loss", "nics", "team", "mode", "primary",
                 "portals", "luns", "chap", "host", "memory", "switch", "link"]
_EXPERIMENT_KEYS = ["experiment", "topology", "mechanisms", "repetitions", "duration", "workloads",
                    "faults", "probe", "vmotion", "iscsi", "iperf3", "heartbeats", "from", "to",
                    "network", "vm", "lun", "hosts", "at", "link", "switch", "host", "action",
                    "fabric", "team", "sweep"]


def documents(keys: list[str]):
    key = st.one_of(st.sampled_from(keys), hostile)
    value = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(key, inner, max_size=4)),
                         max_leaves=12)
    return st.one_of(st.dictionaries(key, value, max_size=8), value)


# Inserted into a valid file's text: tags, anchors, flow syntax, shell text, control characters.
_SNIPPETS = [
    f'!!python/object/apply:os.system ["touch {CANARY}"] ', "!!python/name:os.system ",
    "!!binary ", "!!set ", "!!omap ", "!!timestamp ", "!!float ", "!!str ", "!custom ", "!<tag:x> ",
    "&a ", "*a", "<<: *a\n", "? ", ": ", "- ", "[", "]", "{", "}", ",", "'", '"', "|", ">", "#",
    "\n", "\t", "  ", "%YAML 1.1\n---\n", "---\n", "...\n", ";rm -rf /", "$(reboot)", "`id`",
    "../", "名前", "\u202e", "\x85", "\u2028", "\x00", "\x07", "\x1b", "\ufeff", "a" * 300,
]


# ---- the oracle -------------------------------------------------------------------------------

def _line_re(file: str) -> re.Pattern:
    return re.compile(rf"{re.escape(file)}:\d+(?::\d+)?: \S")


def _known_symptom(problem: Problem) -> bool:
    """A problem whose printing is broken by a bug listed in KNOWN (and only then)."""
    if "field-escape" in KNOWN and any(not c.isprintable() or c.isspace() for c in problem.field):
        return True  # a blank key prints as `file:1:2:  : ...`, a tab is expanded, a newline splits
    if ("topology-path" in KNOWN and problem.field == "topology"
            and problem.message.startswith("no cluster file at ")):
        return True  # the path is printed raw: a newline in it splits the line
    return ("reader-position" in KNOWN and problem.line is None
            and problem.message.startswith(("not valid YAML: unacceptable character",
                                            "not a text file (UTF-8)")))


def _visible(text: str) -> str:
    # rich expands tabs (by cell width) and drops control characters such as \r: compare the rest.
    return "".join(c for c in text if c.isprintable() and not c.isspace())


def check_cli(path: Path, strict: bool = False) -> int:
    """Run `vclab check [--strict] PATH` in-process and hold it to the contract; its exit code."""
    result = RUNNER.invoke(cli.app, ["check", str(path), *(["--strict"] if strict else [])])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    assert result.exit_code in ((0, 1, 2) if strict else (0, 2)), (result.exit_code, result.output)
    if result.exit_code == 1:
        assert "error" in result.stdout or "warning" in result.stdout
    if result.exit_code != 2:
        return result.exit_code
    assert result.stderr.endswith("\n")
    pattern = _line_re(str(path))
    bad = [line for line in result.stderr[:-1].split("\n") if not pattern.match(line)]
    if bad:
        # Only a known bug may explain a bad line: the problems, printed, must be the output.
        with pytest.raises(ConfigError) as info:
            load_cluster(path)
        problems = info.value.problems
        printed = "".join(f"{p}\n" for p in problems)
        if "emoji" in KNOWN:
            printed = Emoji.replace(printed)
        assert _visible(result.stderr) == _visible(printed)
        for p in problems:
            assert pattern.match(str(p)) or _known_symptom(p), str(p)
    return 2


def check_experiment(path: Path, cluster: Path) -> LoadedExperiment | None:
    """load_experiment(PATH): a loaded experiment or a ConfigError with file and line per problem."""
    try:
        return load_experiment(path)
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.file in (str(path), str(cluster)), p
            one_line = p.line is not None and "\n" not in str(p) and _line_re(p.file).match(str(p))
            assert one_line or _known_symptom(p), str(p)
        return None
    except (OSError, ValueError) as e:
        # "topology-path": pathlib raises for a path component over 255 bytes or with a NUL.
        assert "topology-path" in KNOWN and ("File name too long" in str(e) or "null byte" in str(e)), e
        return None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    (d / "cluster.yaml").write_text(DEFAULT.read_text())
    return d


@pytest.fixture(scope="module", autouse=True)
def no_canary():
    with contextlib.suppress(FileNotFoundError):
        os.unlink(CANARY)
    yield
    assert not os.path.exists(CANARY), "a YAML tag ran a command"


def _dump(data) -> str:
    out = io.StringIO()
    _SAFE.dump(data, out)
    return out.getvalue()


def _containers(node, path=()):
    if isinstance(node, (dict, list)):
        yield path, node
        for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
            yield from _containers(v, path + (k,))


def _mutate(data, doc) -> None:
    """1-3 random edits anywhere: delete, replace with a hostile value, add a hostile key."""
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        _, node = data.draw(st.sampled_from(list(_containers(doc))), label="where")
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        edit = data.draw(st.sampled_from(["delete", "replace", "add"] if keys else ["add"]), label="edit")
        if edit == "add":
            value = data.draw(scalars, label="value")
            if isinstance(node, dict):
                node[data.draw(hostile, label="key")] = value
            else:
                node.append(value)
        elif edit == "delete":
            del node[data.draw(st.sampled_from(keys), label="key")]
        else:
            node[data.draw(st.sampled_from(keys), label="key")] = data.draw(scalars, label="value")


def _rename(node: dict, old, new) -> None:
    items = [(new if k == old else k, v) for k, v in node.items()]
    node.clear()
    node.update(items)


# ---- cluster files through `vclab check` ------------------------------------------------------

@examples(250)
@given(doc=documents(_CLUSTER_KEYS), strict=st.booleans())
def test_random_cluster_documents(workdir, doc, strict):
    path = workdir / "random.yaml"
    path.write_text(_dump(doc))
    check_cli(path, strict)


# Where a name lives in a cluster file: (section path, what there is renamed).
_NAME_SPOTS = [("switches",), ("hypervisors",), ("networks",), ("storage",), ("management",),
               ("vms",), ("hypervisors", "esx1", "nics"), ("storage", "array1", "luns"),
               ("storage", "array1", "portals"), ("management", "vcenter", "nics")]
_REFERENCE_SPOTS = [("links", 0, 1), ("hypervisors", "esx2", "networks", 1), ("vms", "web1", "host"),
                    ("vms", "web2", "networks", 0), ("hypervisors", "esx1", "team", "primary"),
                    ("management", "vcenter", "nics", "eth1"), ("storage", "array1", "portals", "storage-a")]


def _at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@examples(250)
@given(data=st.data(), name=hostile)
def test_hostile_names_in_the_default_cluster_are_refused(workdir, data, name):
    doc = copy.deepcopy(_BASE)
    doc["hypervisors"]["esx1"]["team"] = {"mode": "active-backup", "primary": "vmnic0"}
    where = data.draw(st.sampled_from(["name", "reference", "link-name", "cluster"]), label="where")
    if where == "name":
        spot = data.draw(st.sampled_from(_NAME_SPOTS), label="spot")
        section = _at(doc, spot)
        _rename(section, data.draw(st.sampled_from(sorted(section)), label="old"), name)
    elif where == "reference":
        *parent, key = data.draw(st.sampled_from(_REFERENCE_SPOTS), label="spot")
        _at(doc, parent)[key] = name
    elif where == "link-name":
        doc["links"][0] = {"between": ["tor-a", "tor-b"], "name": name}
    else:
        doc["cluster"] = name
    path = workdir / "renamed.yaml"
    path.write_text(_dump(doc))
    code = check_cli(path)
    rule = LINK_NAME_RE if where == "link-name" else NAME_RE  # link names may hold / and #
    if not rule.fullmatch(name):
        assert code == 2, f"{name!r} as a {where} was accepted"


@examples(200)
@given(data=st.data())
def test_hostile_text_in_the_default_cluster(workdir, data):
    text = DEFAULT.read_text()
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        at = data.draw(st.integers(0, len(text)), label="at")
        cut = data.draw(st.integers(0, 4), label="cut")
        text = text[:at] + data.draw(st.sampled_from(_SNIPPETS), label="insert") + text[at + cut:]
    path = workdir / "mangled.yaml"
    path.write_text(text)
    check_cli(path)


# ---- experiment files through load_experiment -------------------------------------------------

def _topology_paths():
    # Long enough to be hostile; the "topology-path" bug (>255 bytes, NUL) is pinned below.
    short = hostile.filter(lambda s: len(s.encode()) < 200 and "\x00" not in s)
    return short if "topology-path" in KNOWN else hostile


@examples(300)
@given(data=st.data())
def test_hostile_experiment_documents(workdir, data):
    doc = copy.deepcopy(_BASE_EXPERIMENT)
    how = data.draw(st.sampled_from(["mutate", "names", "topology", "inline", "random"]), label="how")
    if how == "mutate":
        _mutate(data, doc)
    elif how == "names":
        name = data.draw(hostile, label="name")
        i = data.draw(st.integers(0, len(doc["workloads"]) - 1), label="workload")
        spec = next(iter(doc["workloads"][i].values()))
        spec[data.draw(st.sampled_from(sorted(spec)), label="key")] = name
        fault = doc["faults"][data.draw(st.integers(0, len(doc["faults"]) - 1), label="fault")]
        fault[data.draw(st.sampled_from(["link", "switch", "host"]), label="target")] = name
    elif how == "topology":
        doc["topology"] = data.draw(_topology_paths(), label="topology")
    elif how == "inline":
        cluster = copy.deepcopy(_BASE)
        _mutate(data, cluster)
        doc["topology"] = cluster
    else:
        doc = data.draw(documents(_EXPERIMENT_KEYS), label="doc")
    path = workdir / "experiment.yaml"
    path.write_text(_dump(doc))
    loaded = check_experiment(path, workdir / "cluster.yaml")
    if how == "names" and loaded is not None:
        assert NAME_RE.fullmatch(name) or name in ("tor-a/tor-b#1", "esx1.vmnic0"), name


@examples(200)
@given(data=st.data())
def test_hostile_text_in_the_default_experiment(workdir, data):
    text = DEFAULT_EXPERIMENT.read_text().replace("../topologies/default.yaml", "cluster.yaml")
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        at = data.draw(st.integers(0, len(text)), label="at")
        cut = data.draw(st.integers(0, 4), label="cut")
        text = text[:at] + data.draw(st.sampled_from(_SNIPPETS), label="insert") + text[at + cut:]
    path = workdir / "mangled-experiment.yaml"
    path.write_text(text)
    check_experiment(path, workdir / "cluster.yaml")


# ---- hostile names, one at a time -------------------------------------------------------------

@pytest.mark.parametrize("name", ["a;rm -rf /", "$(reboot)", "x|y", "../../etc", "esx1\nesx2", "名前"])
def test_hostile_node_name_is_refused_quoted_with_the_rule(workdir, name):
    doc = copy.deepcopy(_BASE)
    _rename(doc["switches"], "tor-b", name)
    path = workdir / "hostile-switch.yaml"
    path.write_text(_dump(doc))
    result = RUNNER.invoke(cli.app, ["check", str(path)])
    assert result.exit_code == 2
    assert f"{name!r} cannot become a Linux interface or host name: {NAME_RULE}" in result.stderr
    assert result.stderr.startswith(f"{path}:")
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    (problem,) = [p for p in info.value.problems if repr(name) in p.message]
    assert problem.line is not None and problem.field.startswith("switches.")


def test_hostile_experiment_name_is_refused(workdir):
    text = DEFAULT_EXPERIMENT.read_text().replace("../topologies/default.yaml", "cluster.yaml")
    path = workdir / "hostile-workload.yaml"
    path.write_text(text.replace("{from: esx1, to: esx2,", "{from: 'a;rm -rf /', to: esx2,"))
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "{from: esx1, to: esx2," in l)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (line, "workloads.0.probe.from")
    assert f"'a;rm -rf /' cannot become a Linux interface or host name: {NAME_RULE}" in problem.message


def test_yaml_tags_construct_nothing(workdir):
    path = workdir / "tag.yaml"
    path.write_text(f'cluster: !!python/object/apply:os.system ["touch {CANARY}"]\n'
                    "networks: !!python/name:os.system\nswitches: {tor-a: {}}\n")
    assert check_cli(path) == 2
    assert not os.path.exists(CANARY)


# ---- pins: bugs found here, to be fixed in the files named ------------------------------------

def _pin(bug: str, reason: str):
    return pytest.mark.xfail(bug in KNOWN, strict=True, reason=reason)


def test_long_problems_stay_on_one_line(workdir):
    # rich wraps at 80 columns when stderr is not a terminal unless told not to.
    doc = copy.deepcopy(_BASE)
    doc["switches"]["tor-b"]["a_key_long_enough_to_push_this_problem_past_eighty_columns"] = 1
    path = workdir / "long.yaml"
    path.write_text(_dump(doc))
    result = RUNNER.invoke(cli.app, ["check", str(path)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "allowed: priority" in line


@_pin("emoji", "cli.py: err.print(...) turns `:name:` into an emoji (rich's default); pass emoji=False")
def test_problems_are_printed_verbatim(workdir):
    path = workdir / "emoji.yaml"
    path.write_text(DEFAULT.read_text().replace("  tor-b: {", "  tor-b: {x:smile:: 1, "))
    result = RUNNER.invoke(cli.app, ["check", str(path)])
    assert result.exit_code == 2
    assert "unknown key 'x:smile:'" in result.stderr


@_pin("field-escape", "yamlfile._field_path prints keys raw: a key with a newline splits its "
                      "problem over two lines (and can forge one), a blank key leaves the field "
                      "empty; quote keys that hold whitespace or unprintable characters")
def test_a_key_with_a_newline_stays_on_one_line(workdir):
    path = workdir / "newline-key.yaml"
    path.write_text(DEFAULT.read_text().replace("  tor-b: {", '  "tor-b\\nx.yaml:1:1: forged": {'))
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    assert all("\n" not in str(p) for p in info.value.problems)


@_pin("reader-position", "yamlfile.load_yaml: ruamel's ReaderError (control characters) and "
                         "UnicodeDecodeError are reported without a line; compute it from the offset")
@pytest.mark.parametrize("bad", [b"\x07", b"\x1b", b"\xff"])
def test_unreadable_characters_get_a_line(workdir, bad):
    path = workdir / "control.yaml"
    path.write_bytes(DEFAULT.read_bytes().replace(b"tor-b: {", b"tor" + bad + b"b: {", 1))
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    (problem,) = info.value.problems
    line = next(i for i, l in enumerate(DEFAULT.read_text().splitlines(), 1) if l.startswith("  tor-b: {"))
    assert problem.line == line and "\n" not in str(problem)


@_pin("topology-path", "experiments/loader.py: Path.is_file raises OSError (name too long) and "
                       "resolve ValueError (NUL); catch both and report at `topology`")
@pytest.mark.parametrize("topology", ["a" * 300, "a\x00b"])
def test_unusable_topology_path_is_a_config_error(workdir, topology):
    doc = copy.deepcopy(_BASE_EXPERIMENT)
    doc["topology"] = topology
    path = workdir / "topology.yaml"
    path.write_text(_dump(doc))
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if l.startswith("topology:"))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    (problem,) = info.value.problems
    assert problem.field == "topology" and problem.line == line


@_pin("link-name", "spec.Link.name is free text: refuse what is not a plain name (plan.ovs_commands "
                   "writes it inside ovs-vsctl quotes, so a '\"' breaks the build, not validation)")
def test_hostile_link_name_is_refused(workdir):
    doc = copy.deepcopy(_BASE)
    doc["links"][0] = {"between": ["tor-a", "tor-b"], "name": 'x" external_ids:evil="1;rm -rf /'}
    path = workdir / "link-name.yaml"
    path.write_text(_dump(doc))
    assert check_cli(path) == 2


def test_link_names_reach_ovs_vsctl_as_one_argument_each():
    # A hostile link name is refused by validation; what is accepted goes to ovs-vsctl as one
    # argument of an argument list, never through a shell.
    doc = copy.deepcopy(_BASE)
    doc["links"][0] = {"between": ["tor-a", "tor-b"], "name": "a;rm -rf /"}
    with pytest.raises(ConfigError) as info:
        cluster_from_text(_dump(doc))
    assert "links.0.name" in str(info.value)
    doc["links"][0]["name"] = "isl-1/a#b"
    plan = build_plan(cluster_from_text(_dump(doc)), "vcb")
    for cmd in ovs_commands(plan):
        assert isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)


# ==== issue 17: one family at a time ===========================================================
# Every sample in tests/data/hostile gets rc 2 and its first problem names the file (the
# cluster file where the problem is in it), the line, and says what is wrong in these words.
# tests/data/hostile/measure.py times the same samples, and a few made on the fly, as
# subprocesses under /usr/bin/time (target: < 2 s, < 200 MB).

HOSTILE = ROOT / "tests" / "data" / "hostile"
FAMILIES = {  # sample: (file blamed, line, words the first problem holds)
    "alias-bomb.yaml": (None, 5, "with its aliases expanded the document holds more than 20,000 values"),
    "alias-bomb-experiment.yaml": ("alias-bomb.yaml", 5, "aliases of aliases multiply"),
    "self-anchor.yaml": (None, 1, "alias *a is inside its own anchor"),
    "deep-nesting.yaml": (None, 1, "nested more than 32 deep"),
    "topology-symlink-loop.yaml": (None, 8, "Too many levels of symbolic links (a loop of symbolic links)"),
    "topology-directory.yaml": (None, 8, "it is a directory"),
    "topology-dev-zero.yaml": (None, 8, "it is a character device"),
    "nan-duration.yaml": (None, 12, "duration: Input should be a finite number (got nan)"),
    "negative-warmup.yaml": (None, 11, "warmup: Input should be greater than or equal to 0"),
    "infinite-settle.yaml": (None, 12, "settle: Input should be a finite number (got inf)"),
    "zero-duration.yaml": (None, 12, "duration: Input should be greater than 0"),
    "zero-probe-every.yaml": (None, 14, "probe.every: Input should be greater than 0"),
    "negative-heartbeat-interval.yaml": (None, 18, "heartbeats.interval: Input should be greater than or equal to 0"),
    "nan-fault-at.yaml": (None, 23, "faults.0.at: Input should be a finite number (got nan)"),
    "zero-iperf3-rate.yaml": (None, 21, "iperf3.rate: Input should be greater than 0"),
    "zero-flap-period.yaml": (None, 28, "faults.5.period: Input should be greater than 0"),
    "nan-sweep-hold.yaml": (None, 23, "faults.0.hold: Input should be a finite number (got nan)"),
    "nan-locking-timers.yaml": (None, 16, "locking.lease: Input should be a finite number (got nan)"),
    "repetitions-true.yaml": (None, 10, "repetitions: Input should be a valid integer (got True)"),
    "flap-count-true.yaml": (None, 27, "faults.4.count: Input should be a valid integer (got True)"),
    "none-over-parallel-cables.yaml": (None, 12, "mechanism 'none' would leave the loop"),
    "sdn-with-lag.yaml": (None, 13, "mechanism 'sdn' cannot use the inter-switch LAG isl"),
    "node-named-vcs0.yaml": (None, 21, "'vcs0' is also the name of one of vclab's bridges"),
    "network-named-lo.yaml": (None, 18, "a network cannot be called 'lo'"),
    "iscsi-mix-170-30.yaml": (None, 20, "mix '170/30': read and write percent must add up to 100"),
    "mechanism-twice.yaml": (None, 9, "rstp is listed more than once"),
    "python-tag.yaml": (None, 11, "tag !!python/object/apply:os.system is not allowed"),
    "multicast-subnet.yaml": (None, 15, "reaches into multicast"),
    "loopback-subnet.yaml": (None, 15, "reaches into loopback"),
    "zero-subnet.yaml": (None, 15, "reaches into 'this network'"),
    "probe-to-itself.yaml": (None, 14, "probe from esx1 to itself never leaves the host"),
    "iperf3-to-itself.yaml": (None, 21, "iperf3 from esx3 to itself never leaves the host"),
    "flap-past-end.yaml": (None, 27, "after the end of the run (32000 ms)"),
    "vmotion-after-end.yaml": (None, 19, "when the run has ended (32000 ms)"),
    "down-twice.yaml": (None, 24, "link esx1.vmnic0 is already down at 11000 ms"),
    "up-without-down.yaml": (None, 24, "`up` of link esx1.vmnic0 at 11000 ms has no earlier `down`"),
    "recover-without-fail.yaml": (None, 28, "`recover` of switch tor-a at 29000 ms has no earlier `fail`"),
    "crash-twice.yaml": (None, 28, "host esx3 already crashed at 3000 ms"),
    "down-and-silent-at-once.yaml": (None, 24, "already gets `down` at 6000 ms (faults.0)"),
    "period-on-a-down.yaml": (None, 23, "`period` only applies to a flap fault"),
    "direction-on-a-down.yaml": (None, 23, "`direction` only applies to a silent fault"),
    "controller-with-action.yaml": (None, 27, "a controller fault takes no `action`"),
    "missing-network-finding.yaml": (None, 34, "error missing-network esx3"),
    "duplicate-anchor.yaml": (None, 30, "anchor &host is given twice; the first is on line 26"),
    "empty.yaml": (None, 1, "the file must be a mapping of keys"),
    "binary.yaml": (None, 2, "not a text file (UTF-8)"),
    "int-tag-abc.yaml": (None, 14, "'abc' is not a whole number, which its tag !!int asks for"),
}


def test_every_sample_is_a_family():
    samples = {p.name for p in HOSTILE.glob("*.yaml") if not p.is_symlink()}
    assert samples == set(FAMILIES)


def _first_line(args: list[str]) -> tuple[int, str]:
    result = RUNNER.invoke(cli.app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result.exit_code, (result.stderr.splitlines() or [""])[0]


@pytest.mark.parametrize("sample", sorted(FAMILIES))
def test_family_sample_is_refused_at_its_line(sample, monkeypatch):
    monkeypatch.chdir(HOSTILE)
    blamed, line, words = FAMILIES[sample]
    code, first = _first_line(["check", sample])
    assert code == 2, first
    blamed = str(HOSTILE / blamed) if blamed else sample
    assert first.startswith(f"{blamed}:{line}:"), first
    assert words in first, first


@pytest.mark.parametrize("make, words", [
    (lambda d: os.mkfifo(d / "x.yaml"), "it is a named pipe (FIFO)"),
    (lambda d: (d / "x.yaml").mkdir(), "it is a directory"),
    (lambda d: os.symlink("x.yaml", d / "x.yaml"), "(a loop of symbolic links)"),
    (lambda d: (d / "x.yaml").write_text("cluster: " + "a" * 10_000_000 + "\n"),
     "the file is 10,000,010 bytes; vclab reads files of at most 131,072 bytes"),
    (lambda d: None, "No such file or directory"),
])
def test_what_is_not_a_regular_file_is_refused_unread(tmp_path, make, words):
    make(tmp_path)
    code, first = _first_line(["check", str(tmp_path / "x.yaml")])
    assert code == 2 and first.startswith(f"{tmp_path / 'x.yaml'}: cannot read the file: " if
                                          "bytes" not in words else f"{tmp_path / 'x.yaml'}: ")
    assert words in first


@pytest.mark.parametrize("special, words", [("/dev/zero", "it is a character device"),
                                            ("/proc/meminfo", "a file the kernel makes up"),
                                            ("/", "it is a directory")])
def test_kernel_files_are_refused_unread(special, words):
    if not os.path.exists(special):
        pytest.skip(f"no {special} here")
    code, first = _first_line(["check", special])
    assert code == 2 and first.startswith(f"{special}: cannot read the file: ") and words in first


def test_shipped_files_pass_check_with_the_documented_status():
    # 0, or 2 where the file is a lesson in what the analysis finds (its comment lists errors:
    # a missing network, single points of failure) or in what gets refused.
    refused = {"topologies/missing-vmotion.yaml", "experiments/missing-vmotion.yaml",
               "topologies/no-team.yaml", "topologies/single-switch.yaml"}
    for path in sorted([*ROOT.glob("topologies/*.yaml"), *ROOT.glob("experiments/*.yaml")]):
        name = str(path.relative_to(ROOT))
        result = RUNNER.invoke(cli.app, ["check", str(path)])
        assert result.exit_code == (2 if name in refused else 0), (name, result.output)


def test_check_help_documents_the_exit_status():
    text = " ".join(RUNNER.invoke(cli.app, ["check", "--help"]).stdout.split())
    assert "Exit status: 0 valid" in text and "2 the file is wrong" in text and "the analysis found an error" in text


@pytest.mark.parametrize("kind, title", [("cluster", "Cluster"), ("experiment", "Experiment")])
def test_schema_of_both_kinds(kind, title):
    result = RUNNER.invoke(cli.app, ["schema", "--kind", kind])
    assert result.exit_code == 0
    import json

    assert json.loads(result.stdout)["title"] == title


def test_a_long_value_is_cut_in_the_message(workdir):
    path = workdir / "long-value.yaml"
    path.write_text(DEFAULT.read_text().replace("cluster: lab", "cluster: " + "A" * 100_000))
    code, first = _first_line(["check", str(path)])
    assert code == 2 and "(100000 characters)" in first and len(first) < 400, first[:500]


# ---- the loader itself, fuzzed -----------------------------------------------------------------

from vclab.yamlfile import MAX_DEPTH, MAX_VALUES, load_yaml  # noqa: E402


def _load_or_problem(text: str):
    """load_yaml on text: data, or a ConfigError whose problems each have a line; nothing else."""
    try:
        return load_yaml("f.yaml", text)
    except ConfigError as e:
        assert e.problems and all(p.file == "f.yaml" for p in e.problems)
        for p in e.problems:
            assert p.line is not None or p.message.startswith(("not valid YAML", "the text is")), p
            assert "\n" not in str(p) and len(str(p)) < 2600
        return e


@examples(150)
@given(width=st.integers(2, 12), levels=st.integers(1, 9))
def test_alias_bombs_are_refused_before_they_grow(width, levels):
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    found = _load_or_problem("\n".join(lines) + "\n")
    size, expanded = width + 1, 1  # a0's list and items; the root mapping
    for _ in range(levels):
        expanded += 1 + size  # a key and its value
        size = width * size + 1
    if expanded > MAX_VALUES:
        assert isinstance(found, ConfigError)
        assert "aliases expanded" in found.problems[0].message or "holds more than" in found.problems[0].message
    elif isinstance(found, ConfigError):
        raise AssertionError(found)


@examples(100)
@given(depth=st.integers(1, 3000), flow=st.booleans(), kind=st.sampled_from("[{"))
def test_nesting_is_refused_past_the_limit(depth, flow, kind):
    close = {"[": "]", "{": "}"}[kind]
    if flow:
        inner = "1" if kind == "[" else "a: 1"
        text = "x: " + (kind if kind == "[" else "{a: ") * depth + inner + (close * depth) + "\n"
    else:
        text = "".join(f"{'  ' * i}k{i}:\n" for i in range(min(depth, 200))) + "  " * min(depth, 200) + "v\n"
    found = _load_or_problem(text)
    levels = depth + 1 if flow else min(depth, 200)
    if levels > MAX_DEPTH + 1:
        assert isinstance(found, ConfigError) and "nested more than" in found.problems[0].message


_YAMLISH = "ab:-[]{},&*!|>'\"#%@`?\n \t01.~<=\\"


@examples(400)
@given(text=st.one_of(st.text(alphabet=_YAMLISH, max_size=200),
                      st.text(max_size=120),
                      st.binary(max_size=120).map(lambda b: b.decode("latin-1"))))
def test_the_loader_answers_any_text_with_data_or_problems(text):
    _load_or_problem(text)


@examples(200)
@given(data=st.data())
def test_anchors_and_aliases_anywhere(data):
    # A valid file with anchors put on random values and aliases to them put elsewhere: loads,
    # or says which anchor or alias is wrong, at a line.
    lines = DEFAULT.read_text().splitlines()
    for k in range(data.draw(st.integers(1, 4), label="anchors")):
        i = data.draw(st.integers(0, len(lines) - 1), label="where")
        if ": " in lines[i] and not lines[i].lstrip().startswith("#"):
            key, _, value = lines[i].partition(": ")
            lines[i] = f"{key}: &z{k % 2} {value}"
        j = data.draw(st.integers(0, len(lines) - 1), label="alias at")
        if ": " in lines[j] and not lines[j].lstrip().startswith("#"):
            key, _, _ = lines[j].partition(": ")
            lines[j] = f"{key}: *z{data.draw(st.integers(0, 1), label='which')}"
    _load_or_problem("\n".join(lines) + "\n")


@examples(100)
@given(tag=st.one_of(st.sampled_from(["!!python/object:os.system", "!!binary", "!!set", "!!omap",
                                      "!!timestamp", "!custom", "!<tag:x>", "!!python/name:os.system"]),
                     st.text(alphabet="abcxyz/:.", min_size=1, max_size=12).map(lambda t: "!" + t)))
def test_tags_outside_plain_yaml_are_refused(tag):
    found = _load_or_problem(f"cluster: {tag} lab\n")
    assert isinstance(found, ConfigError) and (
        "is not allowed: vclab files are plain YAML" in found.problems[0].message
        or found.problems[0].line == 1)


@pytest.mark.parametrize("tag, value, words", [("!!int", "abc", "'abc' is not a whole number"),
                                               ("!!float", "x", "'x' is not a number"),
                                               ("!!bool", "maybe", "'maybe' is not true or false")])
def test_plain_tags_on_wrong_values_say_so(tag, value, words):
    found = _load_or_problem(f"cluster: {tag} {value}\n")
    assert isinstance(found, ConfigError) and words in found.problems[0].message
    assert "invalid literal" not in found.problems[0].message


# ---- numbers: finite, in range, booleans are not numbers ---------------------------------------

_NUMBERS = st.one_of(st.sampled_from([".nan", ".inf", "-.inf", "-1", "0", "true", "false", "1e999",
                                      "-5ms", "0s", "99999999999999999999s"]),
                     st.floats().map(repr), st.integers(-10**6, 10**9).map(str))
_TIME_FIELDS = {  # (old text in the default experiment, new text with {v}, zero allowed)
    "duration": ("duration: 32s", "duration: {v}", False),
    "warmup": ("warmup: 2s", "warmup: {v}", True),
    "every": ("every: 1ms", "every: {v}", False),
    "interval": ("{isolation_address: vcenter}", "{isolation_address: vcenter, interval: {v}}", False),
    "at": ("{at: 6s, link: esx1.vmnic0, action: down}", "{at: {v}, link: esx1.vmnic0, action: down}", True),
    "rate": ("rate: 200Mbit", "rate: {v}", False),
}


def _as_number(text: str, field: str) -> float | None:
    """What the value means (ms or bits/s), by the units module's own parsers; None if nothing."""
    from ruamel.yaml import YAML as _Y

    from vclab.units import parse_ms, parse_rate

    value = _Y(typ="safe").load(f"x: {text}")["x"]
    try:
        return (parse_rate if field == "rate" else parse_ms)(value)
    except ValueError:
        return None


@examples(200)
@given(data=st.data(), field=st.sampled_from(sorted(_TIME_FIELDS)), value=_NUMBERS)
def test_times_and_rates_are_finite_and_in_range(workdir, data, field, value):
    import math

    old, new, zero_ok = _TIME_FIELDS[field]
    text = DEFAULT_EXPERIMENT.read_text().replace("../topologies/default.yaml", "cluster.yaml")
    path = workdir / "numbers.yaml"
    path.write_text(text.replace(old, new.replace("{v}", value), 1))
    loaded = check_experiment(path, workdir / "cluster.yaml")
    number = _as_number(value, field)
    if loaded is not None:  # accepted: only a finite time or rate in range (refused: any reason)
        assert number is not None and math.isfinite(number) and (number > 0 or (zero_ok and number == 0))


@pytest.mark.parametrize("key, value", [("repetitions", "true"), ("seed", "false"), ("repetitions", "2.0")])
def test_booleans_and_floats_are_not_counts(workdir, key, value):
    text = DEFAULT_EXPERIMENT.read_text().replace("../topologies/default.yaml", "cluster.yaml")
    path = workdir / "counts.yaml"
    line = next(x for x in text.splitlines() if x.startswith("repetitions:"))
    path.write_text(text.replace(line, f"{key}: {value}" if key == "repetitions"
                                 else f"{line}\n{key}: {value}"))
    assert check_experiment(path, workdir / "cluster.yaml") is None


# ---- schedules: state per target ---------------------------------------------------------------

@examples(200)
@given(actions=st.lists(st.tuples(st.sampled_from(["down", "up"]), st.integers(0, 12)), max_size=6))
def test_a_link_goes_down_and_up_in_turn(workdir, actions):
    text = DEFAULT_EXPERIMENT.read_text().replace("../topologies/default.yaml", "cluster.yaml")
    head, _, _ = text.partition("faults:\n")
    faults = "".join(f"  - {{at: {t}s, link: tor-a/tor-b#2, action: {a}}}\n" for a, t in actions)
    path = workdir / "schedule.yaml"
    path.write_text(head + "faults:\n" + faults if actions else head)
    loaded = check_experiment(path, workdir / "cluster.yaml")
    ordered = [a for a, _ in sorted(actions, key=lambda x: x[1])]  # stable: file order at a tie
    alternate = all(a == ("down" if i % 2 == 0 else "up") for i, a in enumerate(ordered))
    distinct = len({t for _, t in actions}) == len(actions)
    assert (loaded is not None) == (alternate and distinct), (actions, loaded)


# ---- networks ----------------------------------------------------------------------------------

@examples(200)
@given(address=st.integers(0, 2**32 - 1), prefix=st.integers(8, 30))
def test_subnets_outside_a_lan_are_refused(workdir, address, prefix):
    import ipaddress

    net = ipaddress.IPv4Network((address, prefix), strict=False)
    path = workdir / "subnet.yaml"
    path.write_text(DEFAULT.read_text().replace("10.20.0.0/24", str(net)))
    code = check_cli(path)
    bad = any(net.overlaps(ipaddress.IPv4Network(b)) for b in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4"))
    if bad:
        assert code == 2


@examples(150)
@given(nets=st.lists(st.tuples(st.integers(0, 255), st.integers(8, 24)), min_size=1, max_size=12))
def test_overlaps_found_in_n_log_n_are_the_pairs(nets):
    import ipaddress

    from vclab.topology.spec import _overlapping_subnets

    subnets = [ipaddress.IPv4Network((10 << 24 | b << 16, p), strict=False) for b, p in nets]
    doc = {"cluster": "c", "switches": {"s": {}},
           "networks": {f"n{i}": {"vlan": i + 1, "subnet": str(s), "kind": "vm"} for i, s in enumerate(subnets)}}
    from vclab.topology.spec import Cluster

    c = Cluster.model_validate(doc)
    found = [(loc[1], msg.rsplit("of network ", 1)[1].strip("'")) for loc, msg in _overlapping_subnets(c)]
    brute = [(f"n{j}", f"n{i}") for j in range(len(subnets)) for i in range(j) if subnets[i].overlaps(subnets[j])]
    assert sorted(found) == sorted(brute)


def test_many_networks_are_checked_in_near_linear_time():
    import time

    from vclab.topology.spec import Cluster, semantic_problems

    n = 4000
    doc = {"cluster": "c", "switches": {"s": {}},
           "networks": {f"n{i}": {"vlan": i + 1, "subnet": f"10.{i // 256}.{i % 256}.0/24", "kind": "vm"}
                        for i in range(n)}}
    doc["networks"]["n3999"]["subnet"] = "10.0.0.0/8"
    c = Cluster.model_validate(doc)
    t0 = time.perf_counter()
    found = semantic_problems(c)
    assert time.perf_counter() - t0 < 1.0
    assert len(found) == n - 1  # the /8 overlaps every other network, reported on it


@examples(300)
@given(text=st.one_of(st.from_regex(r"\s?\d{1,4}(\.\d{1,3})?\s?[KMGTkmgtiBbsuminpt/%]{0,5}\s?", fullmatch=True),
                      st.text(max_size=12)))
def test_quantities_parse_to_a_number_or_say_what_is_allowed(text):
    # Found here: "1iB" (a cut "1GiB") raised KeyError from the bytes table, not a message.
    import math

    from vclab.units import parse_bytes, parse_ms, parse_percent, parse_rate

    for parse in (parse_bytes, parse_ms, parse_percent, parse_rate):
        try:
            value = parse(text)
        except ValueError as e:
            assert "write e.g." in str(e) or "outside 0%..100%" in str(e)
        else:
            assert math.isfinite(value) and value >= 0
