"""acetest-ml start-up loader for upstream ACETest's own command line.

Python imports ``sitecustomize`` at start-up from the first folder on its
path that has one; with this folder on ``PYTHONPATH`` that is this file. It
does nothing unless ``ACETEST_ML_FILTER`` (or ``ACETEST_ML_COLLECT``) is set;
then it hands over to ``acetest_ml.upstream.activate.activate_from_env``,
which installs the same hook as ``acetest-ml acetest`` (see README.md here).
No upstream code is in this folder.
"""
import os
import sys


def _chain_next_sitecustomize():
    """Run the sitecustomize this file shadows, if the installation has one."""
    import importlib.machinery
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None or not spec.origin:
        return
    if os.path.dirname(os.path.abspath(spec.origin)) == here:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def _load():
    if not (os.environ.get("ACETEST_ML_FILTER") or os.environ.get("ACETEST_ML_COLLECT")):
        return
    try:
        import acetest_ml.upstream.activate as activate
    except ImportError:
        # not installed: use the checkout this folder belongs to
        sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            import acetest_ml.upstream.activate as activate
        except ImportError as e:
            print(f"acetest-ml: filter not installed, upstream runs unfiltered: cannot import acetest_ml ({e})",
                  file=sys.stderr, flush=True)
            return
    activate.activate_from_env()


_chain_next_sitecustomize()
_load()
