"""The ``cxm`` application: the command line, the process supervisor and lab scenarios.

Kept apart from ``shared/`` (the library every agent imports) so that the library holds no
application code and nothing in it imports the command line back.
"""
