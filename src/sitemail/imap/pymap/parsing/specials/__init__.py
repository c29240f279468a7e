"""Package of special data objects, usually composed of one of more
primitives.

"""
# isort: skip_file

__all__ = [
    "AString",
    "DateTime",
    "ExtensionOption",
    "ExtensionOptions",
    "FetchAttribute",
    "FetchRequirement",
    "FetchValue",
    "Flag",
    "Mailbox",
    "ObjectId",
    "SearchKey",
    "SequenceSet",
    "StatusAttribute",
    "Tag",
]

from .astring import AString
from .datetime_ import DateTime
from .fetchattr import FetchAttribute, FetchRequirement, FetchValue
from .flag import Flag
from .mailbox import Mailbox
from .objectid import ObjectId
from .searchkey import SearchKey
from .sequenceset import SequenceSet
from .statusattr import StatusAttribute

# options imports searchkey, which needs the names above: keep it after them
from .options import ExtensionOption, ExtensionOptions
from .tag import Tag
