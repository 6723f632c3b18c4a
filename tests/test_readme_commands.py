"""Every command of README.md and docs/*.md runs as written (tiny synthetic data or tiny CSVs, one epoch).

The commands are parsed out of the pages, not copied here, so what a user reads is what is tested:

- every ```bash block of README.md and docs/*.md: one command a line (comments dropped, `\\` continuations
  joined, `a && b` two commands, a `for V in ...; do ... done` loop unrolled). A fast test checks that each
  command is one this file knows how to run (a script of the repository, or one of NOT_RUN: pip, pytest,
  ruff, ray, a Slurm script's plumbing); a slow test per page runs the page's commands in order in one folder,
  ```python blocks included (but those of PYTHON_BLOCKS_RUN_ELSEWHERE), with the page's input CSVs made up
  (tiny) where they do not exist;
- the README's section of the paper's commands: its training and --testing commands are checked in detail,
  and its ablation flag lines are each applied to the IEMOCAP training command and checked to reach the
  run's config.json. Where the original README is at hand (../shared/paper/README_original.md), every
  command and flag line of it must appear, verbatim, in the project's README.

What is added to a command to make it small: train.py / train_MOSEI.py / bench.py on the paper's datasets
get --synthetic data at a tiny scale and one epoch; extract_features.py gets the tiny random encoder of
conftest.py; experiments.py plans its trials (each resolved by train.py's own parser) but does not start
Ray (tests/test_experiments.py runs real grids); t-SNE gets 250 iterations.
"""
import json
import re
import runpy
import shlex
import shutil
import signal
import sys

import pandas as pd
import pytest

from core import config
from helpers import REPO, WORDS, ok, run_script

README = REPO / 'README.md'
PAGES = [README, *sorted((REPO / 'docs').glob('*.md'))]
ORIGINAL_README = REPO.parent / 'shared' / 'paper' / 'README_original.md'
SECTION = "## The paper's commands"
SCALE = {'IEMOCAP': 0.02, 'MELD': 0.004, 'MOSEI': 0.002}   # 2 / 5 / 5 training dialogues, 1 test dialogue
COMMAND = re.compile(r'^python3? (?:-u )?(train(?:_MOSEI)?\.py)( .*)?$')
PYTHON = ('python', 'python3')
NOT_RUN = {  # a command's first word (or python -m module) -> why this file does not run it
    '.ci/gpu-checks': 'needs a CUDA device (its golden tests run here on the CPU)',
    'pip': 'installs the requirements',
    'pytest': 'is this test suite',
    'ray': 'starts or stops a Ray cluster (tests/test_experiments.py runs Ray embedded)',
    'regroup_emorynlp.py': "reads the real EmoryNLP CSVs (tests/test_regroup_emorynlp.py runs it on made-up ones; "
                           "the page's later commands get tiny CSVs in its place)",
    'ruff': 'is the linter (.ci/run runs it)',
    'serve.py': 'serves until stopped (tests/test_serve.py starts one on a free port, and two Ray Serve replicas)',
    'curl': "asks a running serve.py (tests/test_serve.py sends every endpoint's requests)",
    'printf': "writes a request body with a clip's base64 for curl (tests/test_serve_media.py sends such bodies)",
    'loadtest.py': 'loads a running serve.py (tests/test_serve.py runs it for a few seconds)',
}
PYTHON_BLOCKS_RUN_ELSEWHERE = {'pyg.md': 'tests/test_pyg.py'}   # page -> the test file that runs its python blocks
SHELL_VARIABLES = {'head_ip': '127.0.0.1'}          # the Slurm script's variables, as a run would set them
DEFAULT_DATASET = {'train.py': 'IEMOCAP', 'train_MOSEI.py': 'MOSEI'}


# ----------------------------------------------------------------------------- reading the pages

def code_blocks(text, language=None):
    """(heading, lines) of every ``` block (of `language`, when given), with the nearest heading above it."""
    blocks, heading = [], ''
    for part_index, part in enumerate(text.split('```')):
        if part_index % 2 == 0:
            headings = re.findall(r'^#+ (.*)$', part, re.M)
            heading = headings[-1] if headings else heading
        else:
            first, *lines = part.split('\n')
            if language is None or first.strip() == language:
                blocks.append((heading, lines))
    return blocks


def commands_section():
    """The text of the README's section of the paper's commands."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find('\n## ', start + len(SECTION))
    return text[start:end if end >= 0 else None]


def readme_commands(text):
    """(script, args) of every train.py / train_MOSEI.py command in the code blocks of text, in order."""
    found = []
    for _, lines in code_blocks(text):
        for line in lines:
            match = COMMAND.match(line.strip())
            if match:
                found.append((match.group(1), shlex.split(match.group(2) or '')))
    return found


def flag_lines(text):
    """Flag variants in the code blocks of text, each (flags, drop --multi_modal): ablations, --overhead.

    'Remove --multi_modal' / 'Do not remove --multi_modal' apply to the variants below them;
    'a or b' lines are alternatives; lines with <placeholders> are not commands.
    """
    variants = []
    for _, lines in code_blocks(text):
        drop_multi_modal = False
        for line in (line.strip() for line in lines):
            if line == 'Remove --multi_modal':
                drop_multi_modal = True
            elif line == 'Do not remove --multi_modal':
                drop_multi_modal = False
            elif line.startswith('--') and '<' not in line:
                variants += [(shlex.split(v), drop_multi_modal) for v in line.split(' or ')]
    return variants


def is_flag_line(line):
    """A line of the paper's flag lists (applied to a training command), not a command of its own."""
    return line.startswith('--') or line in ('Remove --multi_modal', 'Do not remove --multi_modal')


def shell_commands(lines):
    """The commands of a bash block, each a list of words: comments and flag lines dropped, continuations
    joined, '&&' split, shell variables substituted, `for V in a b; do ... done` unrolled."""
    joined, pending = [], ''
    for line in lines:
        if line.rstrip().endswith('\\'):
            pending += line.rstrip()[:-1] + ' '
        else:
            joined.append(pending + line)
            pending = ''
    commands, loop = [], None
    for line in joined:
        for name, value in SHELL_VARIABLES.items():
            line = line.replace(f'${name}', value)
        words = shlex.split(line, comments=True)
        if not words or is_flag_line(line.strip()):
            continue
        if words[0] == 'for' and words[-1] == 'do':                 # for VAR in v1 v2 ...; do
            loop = (words[1], [w.rstrip(';') for w in words[3:-1]], [])
        elif words == ['done'] and loop:
            name, values, body = loop
            commands += [[w.replace(f'${name}', value) for w in cmd] for value in values for cmd in body]
            loop = None
        else:
            while '&&' in words:
                (loop[2] if loop else commands).append(words[:words.index('&&')])
                words = words[words.index('&&') + 1:]
            (loop[2] if loop else commands).append(words)
    return commands


def split_command(words):
    """(environment, program, arguments): program is 'python -m MODULE', a script name, or the first word."""
    env = {}
    while words and re.match(r'^[A-Z_][A-Z0-9_]*=', words[0]):
        name, value = words[0].split('=', 1)
        env[name] = value
        words = words[1:]
    if words[0] not in PYTHON:
        return env, words[0], words[1:]
    rest = [w for w in words[1:] if w != '-u']
    if rest[0] == '-m':
        return env, f'python -m {rest[1]}', rest[2:]
    return env, rest[0], rest[1:]


def page_commands(page):
    """('bash', program, args) of every command and ('python', code) of every python block of a page, in order;
    the README's paper's training commands and flag lines are left to their own tests below."""
    text = page.read_text()
    paper = readme_commands(commands_section()) if page == README else []
    items = []
    for part_index, part in enumerate(text.split('```')):
        if part_index % 2 == 0:
            continue
        first, *lines = part.split('\n')
        if first.strip() == 'python' and page.name not in PYTHON_BLOCKS_RUN_ELSEWHERE:
            items.append(('python', '\n'.join(lines)))
        elif first.strip() == 'bash':
            batch_script = lines and lines[0].startswith('#!')
            for words in shell_commands(lines):
                env, program, args = split_command(words)
                if (program, args) in paper:
                    continue
                if batch_script and not program.endswith('.py'):
                    continue                            # the Slurm script's plumbing (srun, scontrol, sleep)
                items.append(('bash', program, args))
    return items


def known(program):
    return program in RUNNERS or program.split()[-1] in NOT_RUN


# ----------------------------------------------------------------------------- running a page's commands

def option(args, name, default=None):
    """The value of --name in args (either spelling: '--name V' or '--name=V'), the last one given."""
    value = default
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + '='):
            value = arg.split('=', 1)[1]
    return value


def tiny_csv(path, seed):
    """A few little labelled dialogues in the plain schema (the file's name gives the split)."""
    import random
    rng = random.Random(seed)
    rows = [(f'd{d}', turn, rng.choice(['Ann', 'Bob', 'Cy']), ' '.join(rng.choices(WORDS, k=rng.randint(1, 5))),
             rng.choice(['anger', 'joy', 'neutral'])) for d in range(4) for turn in range(rng.randint(3, 6))]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=['dialogue', 'turn', 'speaker', 'text', 'emotion']).to_csv(path, index=False)


def tiny_call(path, seed):
    """A little two-person call: the transcript at path (.vtt or .srt), its recording beside it and its labels."""
    import random

    from media_maker import write_recording
    from owndata import transcripts
    rng = random.Random(seed)
    turns = [('AB'[t % 2], ' '.join(rng.choices(WORDS, k=3)), t * 0.5, t * 0.5 + 0.5) for t in range(4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_recording(path.with_suffix('.wav'), [(2.0, 150, 0.3)], video=False)
    pd.DataFrame({'turn': [1, 2, 3, 4], 'emotion': rng.choices(['anger', 'joy', 'neutral'], k=4)}).to_csv(
        transcripts.labels_path(path), index=False)
    transcripts.write(path, turns)


class Page:
    """A page's commands run in order in one folder (cwd), sharing what they write."""

    def __init__(self, root, data_dir, encoder_dir, checkpoint, monkeypatch):
        self.root, self.cwd = root, root / 'work'        # '../x' in a command stays inside root
        self.cwd.mkdir()
        self.data_dir, self.encoder_dir, self.checkpoint = data_dir, encoder_dir, checkpoint
        self.monkeypatch = monkeypatch
        monkeypatch.chdir(self.cwd)

    def make_inputs(self, args):
        """Tiny CSVs for the command's input CSVs that do not exist, a tiny call for its transcripts (inside this
        page's folder only)."""
        inputs = [arg for before, arg in zip(['', *args], args)
                  if arg.endswith(('.csv', '.vtt', '.srt')) and not before.startswith('-')]
        for i, arg in enumerate(inputs):
            path = (self.cwd / arg).resolve()
            if not path.exists() and self.root.resolve() in path.parents:
                (tiny_csv if arg.endswith('.csv') else tiny_call)(path, seed=i)

    def as_main(self, script, args):
        """The script run as `python script args` would, in this process; its exit status."""
        self.monkeypatch.setattr(sys, 'argv', [script, *map(str, args)])
        handler = signal.getsignal(signal.SIGTERM)
        try:
            runpy.run_path(str(REPO / script), run_name='__main__')
            status = 0
        except SystemExit as stop:
            status = stop.code or 0
        assert signal.getsignal(signal.SIGTERM) is handler, f'{script} gives SIGTERM back as it found it'
        return status

    def synthetic(self, dataset):
        return ['--synthetic', '--synthetic-scale', SCALE[dataset], '--data-dir', self.data_dir]

    def train(self, script, args):
        dataset = option(args, '--Dataset', DEFAULT_DATASET[script])
        extra = ['--epochs', 1] if dataset == config.CUSTOM else [*self.synthetic(dataset), '--epochs', 1]
        if '--testing' in args and not option(args, '--checkpoint'):
            if not (self.cwd / f'best_model_{dataset}.pth').exists():
                shutil.copy(self.checkpoint(dataset), self.cwd / f'best_model_{dataset}.pth')
        return self.as_main(script, [*args, *extra])

    def tsne(self, script, args):
        dataset = script[len('tsne_'):-len('.py')]
        if dataset != config.CUSTOM and not (self.cwd / 'saved_features' / f'emotion_labels_{dataset}.pkl').exists():
            testing = ['--paper', '--Dataset', dataset, '--testing', '--checkpoint', self.checkpoint(dataset),
                       '--synthetic', '--synthetic-scale', 0.02, '--data-dir', self.root / 'data']   # >= 10 utterances
            assert self.as_main('train.py', testing) == 0                                        # "after --testing"
        return self.as_main(script, [*args, '--max-iter', 250])

    def extract(self, script, args):
        self.make_inputs(args)
        self.make_clips(args)
        return self.as_main(script, [*args, '--text-model', self.encoder_dir, '--device', 'cpu'])

    def make_clips(self, args):
        """With --media-dir DIR...: a short clip DIR/dia{D}_utt{U}.mp4 for each row of the input CSVs (in order)."""
        from media_maker import write_recording
        if '--media-dir' not in args:
            return
        folders = args[args.index('--media-dir') + 1:]
        folders = folders[:next((i for i, arg in enumerate(folders) if arg.startswith('-')), len(folders))]
        inputs = [arg for before, arg in zip(['', *args], args) if arg.endswith('.csv') and not before.startswith('-')]
        for csv, folder in zip(inputs, folders * len(inputs) if len(folders) == 1 else folders):
            (self.cwd / folder).mkdir(parents=True, exist_ok=True)
            for row in pd.read_csv(self.cwd / csv, dtype=str).itertuples():
                write_recording(self.cwd / folder / f'dia{row.dialogue}_utt{row.turn}.mp4', [(0.3, 150, 0.3)])

    def predict(self, script, args):
        self.make_inputs(args)
        return self.as_main(script, args)

    def baseline(self, script, args):
        return self.as_main(script, args)

    def experiments(self, script, args):
        """Plan the trials (train.py's parser resolves each one's flags) and write the summary; no Ray."""
        import experiments
        import utils
        from studies import ray_trials
        planned = []

        def plan_only(trials, args, out_dir):
            planned.extend(trials)
            return {}, None, None
        self.monkeypatch.setattr(ray_trials, 'run_on_ray', plan_only)
        own, trial_flags = (args[:args.index('--')], args[args.index('--'):]) if '--' in args else (args, [])
        dataset = option(own, '--Dataset')
        extra = [] if dataset in (None, config.CUSTOM) else [*self.synthetic(dataset), '--epochs', 1]
        try:
            status = utils.run_cli(experiments.main, [*own, *extra, *trial_flags])
        except SystemExit as stop:
            status = stop.code
        assert planned or '--list' in args, 'every experiment command here plans trials'
        return status

    def bench(self, script, args):
        """bench.py sets torch's thread count: in its own process."""
        dataset = option(args, '--Dataset', 'IEMOCAP')
        proc = run_script(script, *args, '--synthetic-scale', SCALE[dataset], '--epochs', 1, '--data-dir',
                          self.data_dir, cwd=self.cwd)
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        return proc.returncode

    def run(self, item):
        if item[0] == 'python':
            exec(compile(item[1], 'a python block', 'exec'), {})
            return
        _, program, args = item
        if program not in RUNNERS:
            return                  # one of NOT_RUN (test_every_command_of_the_pages_is_one_this_file_runs)
        status = getattr(self, RUNNERS[program])(program, args)
        assert status == 0, f"exit status {status}: {program} {shlex.join(args)}"


RUNNERS = {'train.py': 'train', 'train_MOSEI.py': 'train', 'extract_features.py': 'extract',
           'predict.py': 'predict', 'baseline.py': 'baseline', 'experiments.py': 'experiments',
           'bench.py': 'bench', 'tsne_IEMOCAP.py': 'tsne', 'tsne_MELD.py': 'tsne', 'tsne_custom.py': 'tsne'}


# ----------------------------------------------------------------------------- the paper's commands

def run(script, args, data_dir, cwd):
    """The command plus the synthetic-data and one-epoch flags, in cwd; returns the CompletedProcess."""
    extra = ['--synthetic', '--synthetic-scale', SCALE[dataset_of(args)], '--data-dir', data_dir, '--epochs', 1]
    return ok(run_script(script, *args, *extra, cwd=cwd))


def dataset_of(args):
    """The --Dataset value of a parsed command (train_MOSEI.py's default when absent)."""
    return option(args, '--Dataset', 'MOSEI')


def run_in_this_process(args, data_dir, cwd, monkeypatch):
    """train.py's main(argv) on the command plus the synthetic-data and one-epoch flags, in cwd, in this process:
    the flag lines parse and run as on the command line, without each paying train.py's seconds of imports."""
    import train
    monkeypatch.chdir(cwd)
    extra = ['--synthetic', '--synthetic-scale', SCALE[dataset_of(args)], '--data-dir', data_dir, '--epochs', 1]
    handler = signal.getsignal(signal.SIGTERM)
    train.main([str(a) for a in [*args, *extra]])
    assert signal.getsignal(signal.SIGTERM) is handler, 'a run gives SIGTERM back as it found it'


def given_flags(flags):
    """dest -> value of the flags in a flag line, as train.py parses them."""
    parser = config.build_parser()
    parsed = parser.parse_args(flags)
    spelled = {flag.split('=')[0] for flag in flags if flag.startswith('--')}
    return {dest: getattr(parsed, dest) for dest, action in parser.flags.items()
            if spelled & set(action.option_strings)}


COMMANDS = readme_commands(commands_section())
TRAINING = {}                                  # dataset -> its first training command
for _script, _args in COMMANDS:
    if '--testing' not in _args:
        TRAINING.setdefault(dataset_of(_args), (_script, _args))
FLAG_LINES = flag_lines(commands_section())


def test_the_readme_lists_the_expected_commands():
    assert sorted(TRAINING) == ['IEMOCAP', 'MELD', 'MOSEI']
    assert sum('--testing' in args for _, args in COMMANDS) == 2       # the MOSEI one lacks --testing
    assert len(FLAG_LINES) >= 15 and (['--testing', '--overhead'], False) in FLAG_LINES


@pytest.mark.skipif(not ORIGINAL_README.is_file(), reason=f"the original README is not at {ORIGINAL_README}")
def test_every_command_of_the_original_readme_is_in_ours():
    original = ORIGINAL_README.read_text()
    assert readme_commands(original) and all(c in COMMANDS for c in readme_commands(original))
    assert all(line in FLAG_LINES for line in flag_lines(original))
    for _, lines in code_blocks(original):
        for words in shell_commands(lines):
            _, program, args = split_command(words)
            if program.startswith('tsne_'):
                assert ('bash', program, args) in page_commands(README), f"{program} is not in the README"


def test_every_command_of_the_pages_is_one_this_file_runs():
    """A command added to a page must be runnable here (RUNNERS) or say why not (NOT_RUN); train.py's parse."""
    counts = {}
    for page in PAGES:
        for item in page_commands(page):
            if item[0] != 'bash':
                continue
            _, program, args = item
            assert known(program), f"{page.name}: no runner for `{program} {shlex.join(args)}`: add one to RUNNERS"
            counts[page.name] = counts.get(page.name, 0) + 1
            if program in DEFAULT_DATASET and option(args, '--Dataset') != config.CUSTOM:   # custom: its folder
                assert config.parse_args(args, DEFAULT_DATASET[program]).Dataset
    assert {'README.md', 'own-data.md', 'own-data-study.md', 'experiments.md', 'performance.md'} <= set(counts), counts


@pytest.fixture
def checkpoint(trained):
    """dataset -> the best checkpoint of conftest's tiny paper run of it (trained once per session)."""
    return lambda dataset: trained(dataset)[0] / f'best_model_{dataset}.pth'


RUN_PAGES = [page for page in PAGES if any(item[0] == 'python' or item[1] in RUNNERS for item in page_commands(page))]


@pytest.mark.slow
@pytest.mark.parametrize('page', RUN_PAGES, ids=[str(p.relative_to(REPO)) for p in RUN_PAGES])
def test_the_commands_of_a_page_run_in_order(page, tmp_path, data_dir, encoder_dir, checkpoint, monkeypatch):
    runner = Page(tmp_path, data_dir, encoder_dir, checkpoint, monkeypatch)
    for item in page_commands(page):
        runner.run(item)


@pytest.mark.slow
@pytest.mark.parametrize('index', range(len(COMMANDS)),
                         ids=[f"{script}-{dataset_of(args)}{'-testing' if '--testing' in args else ''}"
                              for script, args in COMMANDS])
def test_readme_command_runs(index, checkpoint, data_dir, tmp_path):
    script, args = COMMANDS[index]
    dataset = dataset_of(args)
    if '--testing' not in args:           # a training command (MOSEI's "inference" one, which lacks --testing, too)
        proc = run(script, args + ['--out-dir', 'run'], data_dir, tmp_path)
        assert (tmp_path / 'run' / f'best_model_{dataset}.pth').is_file(), proc.stdout[-2000:]
        return
    shutil.copy(checkpoint(dataset), tmp_path / f'best_model_{dataset}.pth')
    proc = run(script, args, data_dir, tmp_path)
    assert 'weighted F1' in proc.stdout
    assert (tmp_path / 'saved_outputs' / f'utterances_{dataset}.csv').is_file()
    assert (tmp_path / 'saved_features' / f'multimodal_emotions_after_{dataset}.pkl').is_file()


@pytest.mark.slow
@pytest.mark.parametrize('index', range(len(FLAG_LINES)),
                         ids=[' '.join(flags) + (' (no --multi_modal)' if drop else '') for flags, drop in FLAG_LINES])
def test_readme_flag_line_runs_on_the_iemocap_command(index, checkpoint, data_dir, tmp_path, monkeypatch, capsys):
    flags, drop_multi_modal = FLAG_LINES[index]
    script, args = TRAINING['IEMOCAP']
    assert script == 'train.py'
    args = [a for a in args if not (drop_multi_modal and a == '--multi_modal')] + flags
    if '--testing' in flags:
        shutil.copy(checkpoint('IEMOCAP'), tmp_path / 'best_model_IEMOCAP.pth')
        run_in_this_process(args, data_dir, tmp_path, monkeypatch)
        assert 'FLOPs' in capsys.readouterr().out
        return
    run_in_this_process(args + ['--out-dir', 'run'], data_dir, tmp_path, monkeypatch)
    recorded = json.loads((tmp_path / 'run' / 'config.json').read_text())['flags']
    expected = given_flags(flags)
    assert expected and {dest: recorded[dest] for dest in expected} == expected
    assert recorded['multi_modal'] == (not drop_multi_modal)
