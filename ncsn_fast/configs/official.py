"""The YAML of the official code's run folders: ``main.py`` of ermongroup/ncsnv2 (and ermongroup/ncsn) writes
``exp/logs/<doc>/config.yml`` with ``yaml.dump(dict2namespace(config))``, so that file carries
``!!python/object:argparse.Namespace`` tags. :class:`RunFolderLoader` reads them as mappings and constructs nothing
else (``ncsn_fast.config.read_yaml`` turns a refusal into a ConfigError)."""

from __future__ import annotations

from typing import Any

import yaml

YAML_TAG = "tag:yaml.org,2002:"
NAMESPACE_TAG = YAML_TAG + "python/object:argparse.Namespace"  # yaml.dump(argparse.Namespace(...))


class RefusedTag(yaml.YAMLError):
    """A tag RunFolderLoader does not read, and its line (1-based)."""

    def __init__(self, tag: str, line: int) -> None:
        super().__init__(tag)
        self.tag, self.line = tag, line


class RunFolderLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus one tag: ``!!python/object:argparse.Namespace``, which the official ``main.py``
    writes into every run folder's ``config.yml`` (``yaml.dump(dict2namespace(config))``), read as a plain mapping.
    Nothing is constructed: any other Python tag (or unknown tag) raises, naming the tag and its line."""


def _namespace_as_mapping(loader: RunFolderLoader, node: yaml.Node) -> dict[Any, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise RefusedTag(f"{node.tag} on a {node.id}", node.start_mark.line + 1)
    return loader.construct_mapping(node, deep=True)


def _refuse_tag(loader: RunFolderLoader, suffix: Any, node: yaml.Node | None = None) -> Any:
    node = suffix if node is None else node  # add_constructor(None, …) passes (loader, node)
    raise RefusedTag(node.tag, node.start_mark.line + 1)


RunFolderLoader.add_constructor(NAMESPACE_TAG, _namespace_as_mapping)
RunFolderLoader.add_multi_constructor(YAML_TAG + "python/", _refuse_tag)
RunFolderLoader.add_constructor(None, _refuse_tag)
