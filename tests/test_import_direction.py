"""The import direction between the packages (.importlinter's layers: serving > owndata | studies > reports >
core), checked by import-linter as CI checks it, and able to fail: a forbidden import put back into a copy of the
packages breaks the contract. The paper's files at the root are not in a package, so import-linter cannot see
them: their imports are read here with ast."""
import ast
import shutil
import subprocess
import sys

import pytest

from helpers import REPO

PACKAGES = ('core', 'reports', 'owndata', 'studies', 'serving')
PAPER_FILES = ('train.py', 'train_MOSEI.py', 'model.py', 'dataloader.py', 'graph.py', 'utils.py', 'tsne_IEMOCAP.py',
               'tsne_MELD.py')
ABOVE_THE_PAPER = ('owndata', 'serving', 'studies')


def lint_imports(root):
    return subprocess.run([sys.executable, '-c', 'from importlinter.cli import lint_imports_command; '
                           'lint_imports_command()'], cwd=root, capture_output=True, text=True,
                          env={'PYTHONPATH': str(root), 'PATH': '/usr/bin:/bin'}, timeout=120)


def copy_packages(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(REPO / '.importlinter', tmp_path / '.importlinter')
    return tmp_path


def test_the_packages_keep_their_layers():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'Contracts: 1 kept, 0 broken' in proc.stdout, proc.stdout


@pytest.mark.parametrize('importer, imported', [('core/checkpoints.py', 'from owndata import features'),
                                                ('owndata/media.py', 'from serving import service'),
                                                ('reports/plots.py', 'from studies import ray_trials'),
                                                ('studies/ray_trials.py', 'from owndata import conversations')])
def test_a_forbidden_import_breaks_the_contract(tmp_path, importer, imported):
    root = copy_packages(tmp_path)
    path = root / importer
    path.write_text(path.read_text() + f'\n\ndef forbidden():\n    {imported}\n')
    proc = lint_imports(root)
    assert proc.returncode != 0 and '0 kept, 1 broken' in proc.stdout, proc.stdout + proc.stderr


def imported_packages(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


@pytest.mark.parametrize('name', PAPER_FILES)
def test_the_paper_files_import_no_own_data_serving_or_studies(name):
    assert not imported_packages(REPO / name) & set(ABOVE_THE_PAPER)


def test_the_root_holds_at_most_24_python_files():
    assert len(list(REPO.glob('*.py'))) <= 24
