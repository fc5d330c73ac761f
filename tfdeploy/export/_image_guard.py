"""Refuse an encoded image whose header declares too many pixels, before decoding it.

``serving_bytes`` signatures decode client-sent JPEG/PNG/GIF/BMP bytes in the graph; a
few hundred kilobytes of PNG can declare a picture that decodes to gigabytes. The check
reads width and height from the header with string ops (JPEG through
``tf.image.extract_jpeg_shape``) and fails with InvalidArgument (HTTP 400) when
``width * height`` exceeds the limit, or when the format's size cannot be read. The
limit is a constant of the exported graph: it travels with the SavedModel.
"""

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def image_size_check(data, max_pixels):
    """An assert op on one encoded image (scalar tf.string); run it before decoding."""
    import tensorflow as tf

    padded = tf.strings.join([data, tf.constant(b"\x00" * 32)])

    def byte(pos):
        return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, pos, 1), tf.uint8)[0],
                       tf.int64)

    def be32(pos):
        return byte(pos) * 16777216 + byte(pos + 1) * 65536 + byte(pos + 2) * 256 + byte(pos + 3)

    def le16(pos):
        return byte(pos) + byte(pos + 1) * 256

    def le32(pos):
        value = le16(pos) + le16(pos + 2) * 65536
        return tf.where(value >= 2 ** 31, 2 ** 32 - value, value)   # BMP heights may be < 0

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data, output_type=tf.int64)
        return shape[0] * shape[1]

    head = tf.strings.substr(padded, 0, 8)
    pixels = tf.case([
        (tf.equal(head, b"\x89PNG\r\n\x1a\n"), lambda: be32(16) * be32(20)),
        (tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff"), jpeg),
        (tf.equal(tf.strings.substr(head, 0, 4), b"GIF8"), lambda: le16(6) * le16(8)),
        (tf.equal(tf.strings.substr(head, 0, 2), b"BM"), lambda: le32(18) * le32(22)),
    ], default=lambda: tf.constant(-1, tf.int64), exclusive=False)
    return tf.debugging.Assert(
        tf.logical_and(pixels >= 0, pixels <= max_pixels),
        [tf.constant(f"serving_bytes: the image is not a PNG/JPEG/GIF/BMP whose header "
                     f"declares at most {max_pixels} pixels (-1: unknown format); pixels "
                     f"declared:"), pixels], summarize=1)
