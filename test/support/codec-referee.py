"""Independent decoders for test/unit/dicom/codecs.test.ts (run with Debian's /usr/bin/python3).

    codec-referee.py sources OUT
        Writes OUT/src_u12.dcm and OUT/src_s12.dcm: CT_small.dcm's pixels as 12-bit unsigned and
        signed data (pydicom has no such file; DCMTK encodes them for syntaxes pydicom lacks).
    codec-referee.py decode OUT [--pydicom] [FILE.dcm ...] [FILE.j2c ...]
        --pydicom: every file of pydicom's test_files, each classified by the transfer syntax it
        declares (not hand-picked). FILE.dcm: more Part 10 files; an uncompressed one gives its
        pixels as the original of what was encoded from it. FILE.j2c: raw JPEG 2000 / HTJ2K
        codestreams, decoded with Pillow (pydicom 2.3.1 knows no HTJ2K syntax).

OUT/manifest.json gets an entry per file, and every frame's encoded bytes (pydicom.encaps) and the
referee's decoded pixels are written to OUT as little-endian samples, colour interleaved
(pixel_array's layout). The referee is pydicom 2.3.1 with python3-gdcm; Pillow where gdcm does not
decode the syntax; pydicom's own numpy RLE decoder for RLE Lossless (pydicom 2.3.1's gdcm handler
does not take RLE). A file no referee decodes gets `skipped` with the reason.
"""
import glob
import io
import json
import os
import sys
import warnings

import numpy as np
import pydicom
from pydicom import config
from pydicom.encaps import generate_pixel_data_frame
from pydicom.pixel_data_handlers import gdcm_handler, numpy_handler, pillow_handler, rle_handler
from pydicom.pixel_data_handlers.util import convert_color_space, get_j2k_parameters

TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files')
JPEG_DCT = {'1.2.840.10008.1.2.4.50', '1.2.840.10008.1.2.4.51'}
J2K = {'1.2.840.10008.1.2.4.90', '1.2.840.10008.1.2.4.91'}
RLE = '1.2.840.10008.1.2.5'

warnings.simplefilter('ignore')


def frame_info(ds):
    return {
        'rows': int(ds.Rows),
        'columns': int(ds.Columns),
        'samplesPerPixel': int(ds.SamplesPerPixel),
        'bitsAllocated': int(ds.BitsAllocated),
        'bitsStored': int(ds.BitsStored),
        'pixelRepresentation': int(ds.PixelRepresentation),
        'photometricInterpretation': str(ds.PhotometricInterpretation),
        'planarConfiguration': int(ds.get('PlanarConfiguration', 0) or 0),
    }


def referee_pixels(path, tsuid):
    """(handler name, array of every frame, photometric of the array) or raises."""
    handlers = [('pydicom-rle', rle_handler)] if tsuid == RLE else [('gdcm', gdcm_handler), ('pillow', pillow_handler)]
    errors = []
    for name, handler in handlers:
        if not handler.is_available() or not handler.supports_transfer_syntax(tsuid):
            errors.append(f'{name}: does not decode {tsuid}')
            continue
        ds = pydicom.dcmread(path)
        config.pixel_data_handlers = [handler]
        try:
            arr = ds.pixel_array
        except Exception as e:  # noqa: BLE001 - the reason goes into the manifest
            errors.append(f'{name}: {type(e).__name__}: {str(e)[:200]}')
            continue
        photometric = str(ds.PhotometricInterpretation)
        if tsuid in JPEG_DCT and photometric in ('YBR_FULL', 'YBR_FULL_422'):
            # pydicom 2.3.1's gdcm and Pillow handlers hand JPEG's YCbCr samples back unconverted
            # (full resolution); the node's decoder gives RGB, as PS3.5 8.2.1 expects a decoder to.
            arr = convert_color_space(arr, 'YBR_FULL', 'RGB')
            photometric = 'RGB'
        if tsuid in J2K and photometric in ('YBR_ICT', 'YBR_RCT'):
            # The J2K decoder has already undone the component transform; pydicom keeps the header's name.
            photometric = 'RGB'
        return name, arr, photometric
    raise RuntimeError('; '.join(errors))


def write_frames(out, stem, frames, arr, nframes):
    enc, ref = [], []
    for i, frame in enumerate(frames):
        e = f'{stem}.{i}.enc'
        with open(os.path.join(out, e), 'wb') as f:
            f.write(frame)
        enc.append(e)
    if arr is not None:
        for i, data in enumerate(arr.reshape(nframes, -1)):
            r = f'{stem}.{i}.ref'
            with open(os.path.join(out, r), 'wb') as f:
                f.write(data.astype(data.dtype.newbyteorder('<')).tobytes())
            ref.append(r)
    return enc, ref


def part10_entry(out, path, listed):
    name = os.path.basename(path)
    stem = name[:-4]
    try:
        ds = pydicom.dcmread(path)
        tsuid = str(ds.file_meta.TransferSyntaxUID)
    except Exception as e:  # noqa: BLE001
        # No File Meta (or none naming a transfer syntax): no compressed syntax is declared.
        return {'name': name, 'notCompressed': f'declares no transfer syntax ({type(e).__name__})'}
    if not pydicom.uid.UID(tsuid).is_compressed:
        if listed:
            return {'name': name, 'transferSyntax': tsuid, 'notCompressed': pydicom.uid.UID(tsuid).name}
        # An original that the test encoded: its pixels as pydicom reads them.
        config.pixel_data_handlers = [numpy_handler]
        arr = ds.pixel_array
        _, ref = write_frames(out, stem, [], arr, int(ds.get('NumberOfFrames', 1) or 1))
        return {'name': name, 'transferSyntax': tsuid, 'native': True, 'info': frame_info(ds), 'reference': ref}
    entry = {'name': name, 'transferSyntax': tsuid}
    if 'PixelData' not in ds:
        entry['skipped'] = 'no Pixel Data'
        return entry
    nframes = int(ds.get('NumberOfFrames', 1) or 1)
    entry['frames'] = nframes
    entry['info'] = frame_info(ds)
    frames = list(generate_pixel_data_frame(ds.PixelData, nframes))
    try:
        referee, arr, photometric = referee_pixels(path, tsuid)
        entry['referee'] = referee
        entry['refereePhotometric'] = photometric
    except Exception as e:  # noqa: BLE001
        entry['skipped'] = f'no referee decodes it: {e}'
        arr = None
    entry['encoded'], entry['reference'] = write_frames(out, stem, frames, arr, nframes)
    return entry


def codestream_entry(out, path):
    """A raw J2K / HTJ2K codestream, decoded by Pillow (OpenJPEG >= 2.5 reads HTJ2K)."""
    from PIL import Image, features

    name = os.path.basename(path)
    with open(path, 'rb') as f:
        data = f.read()
    params = get_j2k_parameters(data)
    entry = {'name': name, 'referee': f"pillow (openjpeg {features.version('jpg_2000')})"}
    arr = np.array(Image.open(io.BytesIO(data)))
    if params.get('is_signed'):
        # Pillow hands signed samples back offset into unsigned ones (as pydicom's handler undoes).
        arr = (arr.astype(np.int32) - (1 << (int(params['precision']) - 1))).astype(np.int16 if arr.itemsize == 2 else np.int8)
    entry['encoded'], entry['reference'] = write_frames(out, name, [data], arr, 1)
    return entry


def sources(out):
    ct = pydicom.dcmread(os.path.join(TEST_FILES, 'CT_small.dcm'))
    hu = ct.pixel_array.astype(np.int32)
    for name, signed, pixels in (
        ('src_u12.dcm', 0, np.clip(hu + 1024, 0, 4095).astype(np.uint16)),
        ('src_s12.dcm', 1, np.clip(hu, -2048, 2047).astype(np.int16)),
    ):
        ds = pydicom.dcmread(os.path.join(TEST_FILES, 'CT_small.dcm'))
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = signed, 12, 11
        ds.RescaleIntercept = 0 if signed else -1024
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder('<')).tobytes()
        ds.save_as(os.path.join(out, name))


def main():
    command, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if command == 'sources':
        sources(out)
        return
    manifest = []
    for arg in sys.argv[3:]:
        listed = arg == '--pydicom'
        for path in sorted(glob.glob(os.path.join(TEST_FILES, '*.dcm'))) if listed else [arg]:
            entry = codestream_entry(out, path) if path.endswith('.j2c') else part10_entry(out, path, listed)
            manifest.append(entry)
    with open(os.path.join(out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)


if __name__ == '__main__':
    main()
