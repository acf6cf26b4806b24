"""Runtime hook of the validity filter into the original ACETest Tester.

- :mod:`.convert`   upstream's generated argument values -> AbstractInput / ApiSpec
- :mod:`.hook`      patches ``APIManager.generate_random_args`` and ``Runner.run`` /
  ``terminate`` (regenerate while predicted invalid, label outcomes, online training)
- :mod:`.bootstrap` installs the hook, then runs upstream's ``main.py`` unmodified
- :mod:`.runner`    ``acetest-ml acetest``: locate the checkout, run, report pass rates
"""
from .convert import api_name, spec_from_upstream, to_abstract_input, upstream_dtype
from .hook import FilterConfig, FilterHook, install, read_stats
from .runner import run_upstream

__all__ = ["api_name", "upstream_dtype", "spec_from_upstream", "to_abstract_input", "FilterConfig",
           "FilterHook", "install", "read_stats", "run_upstream"]
