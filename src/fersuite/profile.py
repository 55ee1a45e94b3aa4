"""Old name of ``fersuite-profile``: the app is :mod:`fersuite.cli.profile`, its library
:mod:`fersuite.profiling.records`."""

from fersuite.cli.profile import hydra_main, main
from fersuite.profiling.records import (
    DEVICES,
    ProfileSettings,
    print_profile,
    profile_config,
    profile_model,
    write_profile,
)

__all__ = [
    "DEVICES",
    "ProfileSettings",
    "hydra_main",
    "main",
    "print_profile",
    "profile_config",
    "profile_model",
    "write_profile",
]

if __name__ == "__main__":
    main()
