"""The pipeline's refusals: domain errors whose message says what to fix.

Only the HTTP layer (``app.api.errors``) maps them to status codes.
"""


class PipelineError(Exception):
    """The pipeline cannot answer this request; the message says why and what to do."""


class UploadRejected(PipelineError):
    """The request holds no image, or a part that is not one."""


class MalformedBody(UploadRejected):
    """The multipart body cannot be parsed."""


class UnsupportedMediaType(UploadRejected):
    """The request's Content-Type is neither multipart/form-data nor an image."""


class UploadTooLarge(UploadRejected):
    """Too many images, or more bytes than allowed."""


class ImageRejected(PipelineError):
    """This image cannot be read as a digit."""


class UnsupportedImage(ImageRejected):
    """The bytes are not an image in any format Pillow can read."""


class ImageTooLarge(ImageRejected):
    """The image decodes to more pixels than allowed (a decompression bomb, or just too big)."""


class BlankImage(ImageRejected):
    """There is no ink to read: answering with a digit would be a guess."""


class ModelNotReady(PipelineError):
    """No verified weights are loaded (yet)."""


class Overloaded(PipelineError):
    """Too many images are already waiting for a forward pass; retry shortly."""
