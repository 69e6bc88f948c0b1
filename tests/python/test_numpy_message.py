"""Importing nnlite where numpy is missing says what to install (not a bare
ImportError from deep inside the package). Run by make test's check python;
the package itself is imported in a child interpreter, so this file needs
nothing but the standard library."""
import os
import shutil
import subprocess
import sys
import unittest

PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python")


def import_nnlite(python, code="import nnlite"):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(PACKAGE), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=60)


class NumpyMissing(unittest.TestCase):
    def check_message(self, r, python):
        self.assertNotEqual(r.returncode, 0)
        last = r.stderr.strip().splitlines()[-1]
        self.assertTrue(last.startswith("ImportError: nnlite needs numpy"), r.stderr)
        self.assertIn("apt-get install python3-numpy", last)
        self.assertIn("-m pip install numpy", last)
        self.assertIn(python, last)  # names the interpreter that lacks it

    def test_simulated(self):
        # numpy made unimportable in this very interpreter
        r = import_nnlite(sys.executable, "import sys; sys.modules['numpy'] = None; import nnlite")
        self.check_message(r, sys.executable)

    def test_an_interpreter_without_numpy(self):
        # a python3 first on PATH that lacks numpy (pyenv, a venv), where there is one
        python = shutil.which("python3")
        if not python:
            self.skipTest("no python3 on PATH")
        r = import_nnlite(python, "import sys; print(sys.executable, flush=True); import nnlite")
        if r.returncode == 0:
            self.skipTest("the python3 on PATH has numpy")
        self.check_message(r, r.stdout.strip())

if __name__ == "__main__":
    unittest.main()
