"""Maps the `stockade.*` packages to the service folders they live in.

Every folder under `services/` holds part of one namespace package, `stockade`; setuptools
cannot find packages spread over several roots by itself, so the mapping is made here.
"""

from pathlib import Path

from setuptools import setup

ROOTS = ["services/common", "services/brain", "services/node-agent", "services/lab", "services/cli"]

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in ROOTS:
    for init in sorted(Path(root, "stockade").rglob("__init__.py")):
        pkg_path = init.parent
        name = ".".join(pkg_path.relative_to(root).parts)
        packages.append(name)
        package_dir[name] = str(pkg_path)

setup(packages=packages, package_dir=package_dir)
