"""Named search spaces of the ablation harness (see search_spaces.spaces)."""

from search_spaces.spaces import SPACES, Continuous, SearchSpace, SpaceError, get_space

__all__ = ["SPACES", "Continuous", "SearchSpace", "SpaceError", "get_space"]
