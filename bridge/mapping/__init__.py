"""Mapping files: load and validate them, and translate normalized events into Zoho issue drafts."""

from .engine import RoutingError, external_id_of, render_comment, translate
from .loader import MappingError, MappingProblem, MappingRegistry, check_directory, load_mapping
from .template import TemplateError, compile_template

__all__ = [
    "MappingError",
    "MappingProblem",
    "MappingRegistry",
    "RoutingError",
    "TemplateError",
    "check_directory",
    "compile_template",
    "external_id_of",
    "load_mapping",
    "render_comment",
    "translate",
]
