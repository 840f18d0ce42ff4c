"""The snippet tests' fork server (tests/forkserver.py) runs a command as a fresh interpreter would:
its arguments, working directory, environment, streams and exit status, signals included."""
import os
import subprocess
import sys

import pytest

from tests.forkserver import ForkServer, write_shims


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("bin")
    write_shims(bin_dir)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    with ForkServer(env) as server:
        yield bin_dir, server.env


def sh(shell, script, cwd, stdin=None):
    _, env = shell
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_python_c_sees_its_cwd_environment_arguments_and_stdin(shell, tmp_path):
    code = ("import os, sys; print(os.getcwd(), os.environ['MARK'], sys.argv, sys.stdin.read().strip()); "
            "print('to stderr', file=sys.stderr); sys.exit(3)")
    done = sh(shell, f'MARK=here python -c "{code}" a b', tmp_path, stdin="piped\n")
    assert done.returncode == 3
    assert done.stdout.split() == [str(tmp_path), "here", "['-c',", "'a',", "'b']", "piped"]
    assert done.stderr == "to stderr\n"


def test_scripts_modules_and_failures_exit_as_an_interpreter_does(shell, tmp_path):
    (tmp_path / "script.py").write_text("import sys\nprint(__name__, sys.argv[1:])\nraise ValueError('boom')\n")
    done = sh(shell, "python script.py x", tmp_path)
    assert done.returncode == 1 and done.stdout == "__main__ ['x']\n"
    assert "ValueError: boom" in done.stderr and "Traceback" in done.stderr
    (tmp_path / "mod.py").write_text("import sys\nprint(__name__, sys.argv)\n")
    done = sh(shell, "python -m mod y", tmp_path)
    assert done.returncode == 0 and done.stdout == f"__main__ ['{tmp_path / 'mod.py'}', 'y']\n"
    done = sh(shell, "python -c 'import sys; sys.exit(\"message\")'", tmp_path)
    assert done.returncode == 1 and done.stderr == "message\n"


def test_bitcl_shim_is_the_cli_and_a_killed_command_reports_the_signal(shell, tmp_path):
    done = sh(shell, "bitcl run --fisher-prior inf", tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("bitcl run: error: --fisher-prior")
    done = sh(shell, "python -c 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'", tmp_path)
    assert done.returncode == 128 + 9


def test_other_python_flags_run_a_real_interpreter(shell, tmp_path):
    done = sh(shell, "python -S -c 'import sys; print(sys.flags.no_site)'", tmp_path)
    assert done.returncode == 0 and done.stdout == "1\n"
