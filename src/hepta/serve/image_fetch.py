"""An image URL of a request -> the image file's bytes, within what the server was started to allow.

Data URLs are always read. Local files (absolute paths or file:// URLs) only inside the folders
given with `hepta serve --allow-image-dir`; none by default, so a client cannot make the server
read its disk. http(s) URLs only with `--allow-remote-images`, fetched with a timeout and a byte
limit, so a slow or endless remote file costs neither a worker nor memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from hepta.modality.image_io import ImageInputError, read_data_url, read_local_image

REMOTE_TIMEOUT_S = 10.0
MAX_REMOTE_BYTES = 20 * 2**20


@dataclass(frozen=True)
class ImageAccess:
    allowed_dirs: tuple[Path, ...] = ()
    allow_remote: bool = False
    timeout_s: float = REMOTE_TIMEOUT_S
    max_bytes: int = MAX_REMOTE_BYTES

    async def read(self, url: str, media: str = "image") -> bytes:
        """The bytes behind `url` (an image, or a video with media="video"); ImageInputError (a
        one-sentence reason) when it may not or cannot be read."""
        if not isinstance(url, str) or not url:
            raise ImageInputError(f"a{'n image' if media == 'image' else ' video'}_url part needs a url: a data URL, "
                                  "or an http(s) or file URL the server allows")
        if url.startswith("data:"):
            return read_data_url(url, media)
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https"):
            return await self._fetch(url, media)
        if scheme == "file" or url.startswith("/"):
            path = unquote(urlparse(url).path) if scheme == "file" else url
            if not self.allowed_dirs:
                raise ImageInputError(f"this server reads no local {media} files ({url}); send a data URL, or start "
                                      f"the server with --allow-image-dir for the {media}'s folder")
            return read_local_image(path, list(self.allowed_dirs), media)
        raise ImageInputError(f"the {media} url {url[:60]!r} is not a data URL, an http(s) URL or an absolute file "
                              f"path; send data:{'image/png' if media == 'image' else 'video/mp4'};base64,...")

    async def _fetch(self, url: str, media: str = "image") -> bytes:
        if not self.allow_remote:
            raise ImageInputError(f"this server does not fetch remote {media}s ({url[:80]}); send the {media} as a "
                                  "data URL, or start the server with --allow-remote-images")
        import httpx

        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True) as client:
                async with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise ImageInputError(f"fetching {url[:80]} answered HTTP {response.status_code}; "
                                              "check the URL or send a data URL")
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > self.max_bytes:
                            raise ImageInputError(f"the {media} at {url[:80]} is larger than {self.max_bytes:,} "
                                                  f"bytes; send a smaller {media}")
                    return bytes(data)
        except httpx.HTTPError as e:
            raise ImageInputError(f"fetching {url[:80]} failed ({type(e).__name__}); check the URL or send a "
                                  "data URL") from e
