"""Part 10 instances written by pydicom (Debian's /usr/bin/python3) for the WADO decoding tests:
compressed instances pydicom's test set has none of, and broken ones. Every output gets new UIDs.

    instances.py wrap TEMPLATE TS OUT [--size ROWSxCOLUMNS] CODESTREAM [CODESTREAM ...]
        TEMPLATE's data set (its Image Pixel module describes the frames; --size changes Rows and
        Columns) with the codestreams as its frames, encapsulated with a Basic Offset Table, in
        transfer syntax TS.
    instances.py refragment SRC OUT PER_FRAME table|wrong|none
        SRC's frames, each cut into PER_FRAME fragments; 'table': with a Basic Offset Table;
        'wrong': one whose second entry points inside a fragment; 'none': no table (empty item).
    instances.py study OUT_DIR
        A study for the rendered and thumbnail resources, from pydicom's test-SR.dcm and CT_small.dcm,
        its instances sharing one study: series 1 an SR (no image); series 2 three CTs, Instance
        Numbers 3, 1, 2 in that order of files; series 3 two CTs with a window (40, 400); a CT of 5 frames (series 4); and an 'MPEG-2' CT
        (series 5) no decoder reads.
        Every CT image differs (CT_small's pixels rolled sideways by a different amount); every
        instance is written to OUT_DIR/<series>-<k>.dcm. Prints each file's UIDs as JSON.
    instances.py garbage SRC OUT
        SRC (a JPEG instance) with its first frame replaced by SOI, bytes no decoder reads, EOI:
        a valid DICOM instance whose codestream is corrupt.
"""
import json
import os
import random
import struct
import sys
import warnings

import numpy as np

import pydicom
from pydicom._uid_dict import UID_dictionary
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.uid import generate_uid

warnings.simplefilter('ignore')


def frames_of(ds):
    return list(generate_pixel_data_frame(ds.PixelData, int(ds.get('NumberOfFrames', 1) or 1)))


def renamed(ds):
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def save(ds, out, ts):
    ds.file_meta.TransferSyntaxUID = ts
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds['PixelData'].VR = 'OB'
    ds['PixelData'].is_undefined_length = True
    # pydicom 2.3.1 knows no HTJ2K syntax: it is told this one is an (encapsulated) transfer syntax.
    if ts not in UID_dictionary:
        UID_dictionary[ts] = (ts, 'Transfer Syntax', '', '', ts)
    ds.save_as(out, write_like_original=False)


def main():
    command = sys.argv[1]
    if command == 'wrap':
        template, ts, out, streams = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
        ds = renamed(pydicom.dcmread(template))
        if streams[0] == '--size':
            ds.Rows, ds.Columns = (int(n) for n in streams[1].split('x'))
            streams = streams[2:]
        frames = []
        for path in streams:
            with open(path, 'rb') as f:
                frames.append(f.read())
        ds.NumberOfFrames = len(frames)
        ds.PixelData = encapsulate(frames, has_bot=True)
        save(ds, out, ts)
    elif command == 'refragment':
        src, out, per_frame, table = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        ds = renamed(pydicom.dcmread(src))
        frames = frames_of(ds)
        data = bytearray(encapsulate(frames, fragments_per_frame=per_frame, has_bot=True))
        # The Basic Offset Table: item tag, length, then one 32-bit offset per frame.
        length = struct.unpack_from('<I', data, 4)[0]
        if table == 'wrong':
            second = struct.unpack_from('<I', data, 12)[0]
            struct.pack_into('<I', data, 12, second + 2)
        elif table == 'none':
            data = data[:4] + struct.pack('<I', 0) + data[8 + length:]
        ds.PixelData = bytes(data)
        save(ds, out, str(ds.file_meta.TransferSyntaxUID))
    elif command == 'study':
        out_dir = sys.argv[2]
        files = os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files')
        study = generate_uid()
        written = []

        def write(ds, series, series_uid, k, instance_number):
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study, series_uid, series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = instance_number
            path = os.path.join(out_dir, f'{series}-{k}.dcm')
            ds.save_as(path, write_like_original=False)
            written.append({'file': path, 'series': series_uid, 'sop': ds.SOPInstanceUID, 'instanceNumber': instance_number})

        write(pydicom.dcmread(os.path.join(files, 'test-SR.dcm')), 1, generate_uid(), 0, 1)
        shift = 0
        for series, numbers in ((2, (3, 1, 2)), (3, (1, 2))):
            series_uid = generate_uid()
            for k, number in enumerate(numbers):
                ds = pydicom.dcmread(os.path.join(files, 'CT_small.dcm'))
                shift += 17
                ds.PixelData = np.roll(ds.pixel_array, shift, axis=1).tobytes()
                if series == 3:
                    ds.WindowCenter, ds.WindowWidth = 40, 400
                write(ds, series, series_uid, k, number)
        ds = pydicom.dcmread(os.path.join(files, 'CT_small.dcm'))
        ds.PixelData = b''.join(np.roll(ds.pixel_array, 23 * f, axis=0).tobytes() for f in range(5))
        ds.NumberOfFrames = 5
        write(ds, 4, generate_uid(), 0, 1)
        ds = pydicom.dcmread(os.path.join(files, 'CT_small.dcm'))
        ds.PixelData = encapsulate([b'\x00\x00\x01\xb3' + bytes(60)], has_bot=True)
        ds['PixelData'].VR = 'OB'
        ds['PixelData'].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = '1.2.840.10008.1.2.4.100'
        write(ds, 5, generate_uid(), 0, 1)
        print(json.dumps({'study': study, 'instances': written}))
    elif command == 'garbage':
        src, out = sys.argv[2], sys.argv[3]
        ds = renamed(pydicom.dcmread(src))
        frames = frames_of(ds)
        rng = random.Random(7)
        noise = bytes(rng.randrange(256) for _ in range(len(frames[0])))
        # No 0xFF in the noise: no marker the decoder could take for a real one.
        noise = noise.replace(b'\xff', b'\x00')
        frames[0] = b'\xff\xd8' + noise + b'\xff\xd9'
        ds.PixelData = encapsulate(frames, has_bot=True)
        save(ds, out, str(ds.file_meta.TransferSyntaxUID))
    else:
        raise SystemExit(f'unknown command {command}')


if __name__ == '__main__':
    main()
