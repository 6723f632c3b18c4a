"""Make the repository's flat scripts importable from the tests, however pytest is started."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
