"""Running rule sets inside the database (compiler.py, run.py) and reading the results (flow.py).

reference.py holds the plain-Python evaluator the tests compare the SQL engine against.
"""
