"""entry.run_script: how a script ends on a stop.

    python -m pytest -q tests/test_entry.py
"""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A script whose work is stopped by its own SIGTERM, and which gets a second SIGTERM while it saves its
# state and a third from an exit handler: what a sweep's run sees when its driver dies with threads.
SCRIPT = textwrap.dedent("""
    import atexit, os, signal, sys, time
    sys.path.insert(0, {root!r})
    import entry

    def body():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            print("not stopped")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the second stop, while the state is saved
            time.sleep(0.2)
            print("state saved")

    atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.2), print("exit handler done")))
    entry.install_stop_handlers()
    sys.exit(entry.run_script(body, entry.Stop("rerun to resume", "during the work")))
""")


def test_only_the_first_stop_interrupts(tmp_path):
    script = tmp_path / "stopped.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "error: interrupted during the work; rerun to resume\n"
    assert done.stdout == "state saved\nexit handler done\n"


def test_without_a_stop_the_scripts_exit_code_stands(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import entry
        entry.install_stop_handlers()
        sys.exit(entry.run_script(lambda: 3, entry.Stop("nothing to resume")))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (3, "")


def test_a_closed_output_pipe_is_one_line(tmp_path):
    """`python main.py ... | head`: the reader goes away while the script still writes."""
    script = tmp_path / "chatty.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import entry

        def body():
            for line in range(10 ** 6):
                print(f"line {{line}}")

        entry.install_stop_handlers()
        sys.exit(entry.run_script(body, entry.Stop("rerun the command")))
    """))
    chatty = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert chatty.stdout.read(8) == b"line 0\nl"
    chatty.stdout.close()  # as head does once it has its lines
    err = chatty.stderr.read().decode()
    assert chatty.wait(timeout=60) == 2
    assert err == "error: standard output was closed before the end (a broken pipe, e.g. `| head`); rerun the command\n"
