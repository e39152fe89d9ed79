"""The README can be followed to the letter: every command of its code blocks that can run offline in a
fresh clone runs there exactly as written, and no command depends on an activated environment it
did not activate.

Each command of a code block is classified below, by its beginning: run (as written, with at most
the appended flags shown, or a smaller seed count where a sweep cannot be shortened otherwise), or
skipped with the reason. A command the README gains later and this file does not know fails the
test, so that it gets classified.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers import ML100K_RAW, ML100K_SPLITS, ROOT, find_data_dir, find_published_log

README = ROOT / "README.md"
BARE_PYTHON = re.compile(r"(?<![\w./-])python(?![\w.-])")
ONE_EPOCH = " --epochs 1 --device cpu"

# (beginning of a command, how it runs in the clone: None = skipped, else (what replaces that
# beginning, what is appended) ... or the reason it is skipped).
RUN, SKIP = "run", "skip"
COMMANDS = [
    ("python3 -m venv .venv", SKIP, "network: installs from the package index and fetches the splits "
                                    "(the clone gets this repository's virtual environment and a copy of the splits)"),
    (".venv/bin/python -m pytest", SKIP, "the test suite itself"),
    (".venv/bin/python main.py --help", RUN, ""),
    (".venv/bin/python main.py --dataset ML-100K", RUN, ONE_EPOCH),
    (".venv/bin/python main.py --model refine_plus --dataset ML-100K", RUN, ONE_EPOCH),
    (".venv/bin/python main.py --model refine_plus --dataset", SKIP,
     "needs that dataset's splits, which only `download --refined` (network) gives"),
    (".venv/bin/python dataloader.py download", SKIP, "network: fetches files (and the authors' logs)"),
    (".venv/bin/python dataloader.py preprocess ML-100K", RUN, ""),
    (".venv/bin/python refine_llm.py run", SKIP, "needs an LLM (a Hugging Face model download or a served model)"),
    ("vllm serve", SKIP, "needs vLLM and a GPU to serve a model"),
    (".venv/bin/python refine_llm.py diff dataset-qwen/", SKIP, "compares the output of the LLM step above"),
    # 5 configs x 5 seeds of main.py; one seed of each keeps it to minutes (the flag is the README's own)
    (".venv/bin/python experiments.py --dataset ML-100K", RUN, " --devices cpu -- --epochs 1"),
    (".venv/bin/python experiments.py --report", RUN, ""),
    (".venv/bin/python compare.py published:ML-100K", RUN, ""),
]
SMALLER = {"--seeds 5": "--seeds 1"}  # where a sweep cannot be shortened by --epochs alone


def code_blocks(text):
    """The README's fenced code blocks (indented ones included), each as a list of logical lines:
    continuation lines joined, comments and blank lines dropped."""
    blocks = []
    for match in re.finditer(r"^( *)```[\w-]*\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
        lines, current = [], ""
        for raw in match.group(2).splitlines():
            line = raw.strip()
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            line = current + line
            current = ""
            line = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())  # the README's comments: after " #"
            if line:
                lines.append(line)
        blocks.append(lines)
    return blocks


def readme_commands():
    return [command for block in code_blocks(README.read_text(encoding="utf-8")) for command in block]


def classify(command):
    for beginning, kind, detail in COMMANDS:
        if command.startswith(beginning):
            return kind, detail
    return None, None


def test_no_bare_python_unless_the_block_activated_the_environment():
    text = README.read_text(encoding="utf-8")
    found = []
    for block in code_blocks(text):
        activated = False
        for line in block:
            activated = activated or "source .venv/bin/activate" in line
            if BARE_PYTHON.search(line) and not activated:
                found.append(line)
    outside = re.sub(r"^( *)```.*?^\1```", "", text, flags=re.MULTILINE | re.DOTALL)
    found += [span for span in re.findall(r"`([^`\n]+)`", outside) if BARE_PYTHON.search(span)
              and "source .venv/bin/activate" not in span]
    assert not found, "bare `python` where no environment is active:\n" + "\n".join(found)


def test_every_readme_command_is_classified():
    commands = readme_commands()
    assert len(commands) >= 15
    unknown = [command for command in commands if classify(command)[0] is None]
    assert not unknown, "README commands this test does not know (add them to COMMANDS):\n" + "\n".join(unknown)


def fresh_clone(tmp_path):
    """A clone of this repository with the working tree's changes, its virtual environment linked in."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=300)
    changed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--modified", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout.split()
    for name in changed:  # the working tree as it is (uncommitted edits included)
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    venv = ROOT / ".venv"
    if not (venv / "bin" / "python").exists():
        pytest.skip("needs the repository's virtual environment .venv (the README's set-up line makes it)")
    (clone / ".venv").symlink_to(venv)
    return clone


@pytest.mark.slow
def test_readme_commands_run_as_written_in_a_fresh_clone(tmp_path):
    data = find_data_dir("ML-100K", ML100K_SPLITS + ML100K_RAW)
    clone = fresh_clone(tmp_path)
    shutil.copytree(data / "ML-100K", clone / "dataset" / "ML-100K",
                    ignore=lambda folder, names: [n for n in names if n not in ML100K_SPLITS + ML100K_RAW])
    log = find_published_log("ReFINe_ML-100K.out")
    if log:  # as `compare.py published:ML-100K` caches it
        (clone / "results4comparison" / "published").mkdir(parents=True)
        shutil.copy(log, clone / "results4comparison" / "published" / log.name)
    env = {key: value for key, value in os.environ.items()
           if key not in ("REFINE_DATA_DIR", "REFINE_LOG_DIR", "VIRTUAL_ENV")}
    ran, skipped = [], []
    for command in readme_commands():
        kind, detail = classify(command)
        assert kind is not None, command
        if kind == SKIP:
            skipped.append((command, detail))
            continue
        if command.startswith(".venv/bin/python compare.py published:") and log is None:
            skipped.append((command, "the authors' log is not here (network): `compare.py published:ML-100K` "
                                     "fetches it"))
            continue
        for written, smaller in SMALLER.items():
            command = command.replace(written, smaller)
        command += detail
        result = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True,
                                timeout=1200)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, command
        ran.append(command)
    print("ran:", *ran, "skipped:", *(f"{c}  ({why})" for c, why in skipped), sep="\n  ")
    assert len(ran) >= 8
    # what the commands left: the main job's log, the sweep's report, the comparison's plot
    assert "Final Test Results" in (clone / "result/ML-100K/nothing.out").read_text()
    assert (clone / "results/ML-100K/summary.md").is_file()
    assert not log or (clone / "compare.png").is_file()
    # and git leaves the outputs alone: the run's, the sweep's and the data folders are ignored
    ignored = subprocess.run(["git", "-C", str(clone), "check-ignore", "result/ML-100K/nothing.out",
                              "results/ML-100K/summary.md", "dataset/ML-100K/ML-100K_test.csv"],
                             capture_output=True, text=True)
    assert ignored.returncode == 0 and len(ignored.stdout.split()) == 3, ignored.stdout


def test_the_closing_summary_lists_every_skip_reason_with_its_count_and_remedy(tmp_path):
    """A suite with skips of every kind (our conftest's summary hook, in a pytest run of its own)."""
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('refine_conftest', {str(ROOT / 'tests' / 'conftest.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
        "pytest_terminal_summary = module.pytest_terminal_summary\n")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\nfrom helpers import find_data_dir\n\n"
        "@pytest.mark.skipif(True, reason='no CUDA GPU here')\ndef test_gpu_a(): pass\n\n"
        "@pytest.mark.skipif(True, reason='no CUDA GPU visible to torch')\ndef test_gpu_b(): pass\n\n"
        "@pytest.mark.skipif(True, reason='root reads any file')\ndef test_root(): pass\n\n"
        "def test_data(): find_data_dir('NOPE', ('x.csv',))\n\n"
        "def test_other(): pytest.skip('a reason nobody listed')\n\n"
        "def test_runs(): pass\n")
    env = {key: value for key, value in os.environ.items() if key not in ("REFINE_DATA_DIR", "REFINE_LOG_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])  # our conftest imports helpers
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_skips.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert "5 skipped tests, by reason" in out
    assert "1 skipped: no CUDA GPU here -> needs a CUDA GPU" in out
    assert "1 skipped: no CUDA GPU visible to torch -> needs a CUDA GPU" in out
    assert "1 skipped: root reads any file -> running as root: file permissions cannot be tested" in out
    assert "1 skipped: published data not found -> python dataloader.py download ML-100K --refined " \
           "(or set $REFINE_DATA_DIR)" in out
    assert "1 skipped: a reason nobody listed" in out
