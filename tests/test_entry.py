"""entry.run_script: how a script ends on a stop.

    python -m pytest -q tests/test_entry.py
"""
import os
import subprocess
import sys
import textwrap

from helpers import ROOT

# The scripts import entry: the repository root on their path.
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def script_command(tmp_path, source, then, where=""):
    """The command that runs `source` (which defines body()) as a script of this project ends:
    entry's stop handlers, then sys.exit(entry.run_script(body, entry.Stop(then, where)))."""
    path = tmp_path / "script.py"
    path.write_text("import sys\nimport entry\n" + textwrap.dedent(source)
                    + f"\nentry.install_stop_handlers()\nsys.exit(entry.run_script(body, entry.Stop({then!r}, {where!r})))\n")
    return [sys.executable, str(path)]


def test_only_the_first_stop_interrupts(tmp_path):
    """Stopped by its own SIGTERM, the script gets a second SIGTERM while it saves its state and a third
    from an exit handler: what a sweep's run can see when its driver is killed."""
    command = script_command(tmp_path, """
        import atexit, os, signal, time

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
    """, "rerun to resume", "during the work")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 2
    assert done.stderr == "error: interrupted during the work; rerun to resume\n"
    assert done.stdout == "state saved\nexit handler done\n"


def test_without_a_stop_the_scripts_exit_code_stands(tmp_path):
    done = subprocess.run(script_command(tmp_path, "body = lambda: 3", "nothing to resume"),
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert (done.returncode, done.stderr) == (3, "")


def test_a_closed_output_pipe_is_one_line(tmp_path):
    """`python main.py ... | head`: the reader goes away while the script still writes."""
    command = script_command(tmp_path, """
        def body():
            for line in range(10 ** 6):
                print(f"line {line}")
    """, "rerun the command")
    chatty = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert chatty.stdout.read(8) == b"line 0\nl"
    chatty.stdout.close()  # as head does once it has its lines
    err = chatty.stderr.read().decode()
    assert chatty.wait(timeout=60) == 2
    assert err == "error: standard output was closed before the end (a broken pipe, e.g. `| head`); rerun the command\n"


def test_a_further_sigterm_while_the_interpreter_shuts_down_keeps_exit_code_2(tmp_path):
    """Python puts back the default action of SIGTERM as it shuts down: a second stop arriving then
    (from an object finalized last) would kill the process by signal 15."""
    command = script_command(tmp_path, """
        import os, signal, time

        class SignalsWhenFinalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)

        sys.modules["finalized_last"] = SignalsWhenFinalized()

        def body():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    """, "rerun to resume")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=ENV)
    assert (done.returncode, done.stderr) == (2, "error: interrupted; rerun to resume\n")
