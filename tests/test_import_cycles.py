"""No import circle among the repository's top-level modules (grimp builds graphs of packages only, and these are
flat modules: the imports are read with ast). Every import counts, at the top of a file or inside a function: a
lazy import is still a circle of responsibilities."""
import ast

from helpers import REPO

MODULES = {path.stem: path for path in REPO.glob('*.py')}


def imported(path):
    """The repository's other modules that the file imports, anywhere in it (a module importing itself, as a Ray
    actor reaches its module's globals, is no circle)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return sorted(names & set(MODULES) - {path.stem})


def find_cycle(graph):
    """One import circle of graph (module -> imported modules) as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = 'open'
        stack.append(module)
        for other in graph[module]:
            if state.get(other) == 'open':
                return stack[stack.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        state[module] = 'done'
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_top_level_modules_import_no_circle():
    graph = {name: imported(path) for name, path in MODULES.items()}
    assert len(graph) > 20 and graph['pyg_graph'] == ['graph']
    cycle = find_cycle(graph)
    assert cycle is None, 'import circle: ' + ' -> '.join(cycle)


def test_a_circle_is_found():
    assert find_cycle({'a': ['b'], 'b': ['c'], 'c': ['a'], 'd': []}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': ['b'], 'b': [], 'c': ['a']}) is None
