"""Independent readings for test/unit/dicom/render.test.ts (run with Debian's /usr/bin/python3).
Each command prints one JSON object; pixel bytes are base64.

    metadata FILE            pydicom's DICOM JSON (to_json_dict) of the file, without Pixel Data
    native FILE              the file's Pixel Data as stored, its transfer syntax, and its pixels
                             converted to RGB by pydicom (convert_color_space) when they are YBR
    image FILE               Pillow's decoding of a PNG or JPEG: format, mode, size, pixels
    palette NAME             pydicom's palette NAME (e.g. HOT_IRON) applied to the values 0..255
"""
import base64
import io
import json
import sys
import warnings

import numpy as np
import pydicom
from pydicom.pixel_data_handlers.util import apply_color_lut, convert_color_space

warnings.simplefilter('ignore')


def b64(data):
    return base64.b64encode(bytes(data)).decode()


def main():
    command, arg = sys.argv[1], sys.argv[2]
    if command == 'metadata':
        ds = pydicom.dcmread(arg, stop_before_pixels=True)
        out = ds.to_json_dict()
    elif command == 'native':
        ds = pydicom.dcmread(arg)
        out = {'pixelData': b64(ds.PixelData), 'transferSyntax': str(ds.file_meta.TransferSyntaxUID), 'photometric': str(ds.PhotometricInterpretation)}
        if 'YBR' in out['photometric']:
            rgb = convert_color_space(ds.pixel_array, out['photometric'], 'RGB')
            out['rgb'] = b64(rgb.astype(np.uint8).tobytes())
    elif command == 'image':
        from PIL import Image

        with open(arg, 'rb') as f:
            im = Image.open(io.BytesIO(f.read()))
            im.load()
        out = {'format': im.format, 'mode': im.mode, 'width': im.size[0], 'height': im.size[1], 'pixels': b64(im.tobytes())}
    elif command == 'palette':
        values = np.arange(256, dtype=np.uint8).reshape(16, 16)
        out = {'rgb': b64(apply_color_lut(values, palette=arg).astype(np.uint8).tobytes())}
    else:
        raise SystemExit(f'unknown command {command}')
    print(json.dumps(out))


if __name__ == '__main__':
    main()
