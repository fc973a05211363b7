"""A DS request: what DS_DRIVER_ACTION_DATA says about the image and its datastore, whose the
new image's volume is, and whether a re-run finds it made already."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import ownership
from .errors import DriverError
from .linstor_api import Linstor, ResourceDef
from .ownership import Owner
from .one_api import Xml
from .validate import natural


@dataclass
class ImageMessage:
    """What DS_DRIVER_ACTION_DATA says about the image and its datastore."""
    image: Xml
    datastore: Xml
    data: Xml

    @classmethod
    def parse(cls, xml: str) -> "ImageMessage":
        data = Xml.parse(xml)
        image = data.root.find("IMAGE")
        ds = data.root.find("DATASTORE")
        if ds is None:
            raise DriverError("the driver action data has no DATASTORE")
        return cls(Xml(image) if image is not None else Xml.parse("<IMAGE/>"), Xml(ds), data)

    @property
    def ds_id(self) -> int:
        return int(self.datastore.text("ID"))

    @property
    def ds_template(self) -> dict:
        return self.datastore.template("TEMPLATE")

    def image_text(self, path: str, default: str = "") -> str:
        return self.image.text(path, default)

    @property
    def size_mb(self) -> int:
        v = self.image_text("SIZE")
        return natural(v) or 0


def owner(msg: "ImageMessage", image_id: int) -> Owner:
    """This image (its id and registration time) as the owner of the volume made for it."""
    return Owner.image(image_id, msg.image.text("REGTIME"))


def already_made(api: Linstor, rd: Optional[ResourceDef], owner: Owner, report) -> bool:
    """A new image's volume (`rd`, None if there is none yet): True if it is this image's, complete
    (a re-run after the answer was lost: nothing to do again); an unfinished one for this image is
    removed (False); anything else stops the action with an error naming it (ownership.may_reuse)."""
    return rd is not None and ownership.may_reuse(api, rd, owner, report)
