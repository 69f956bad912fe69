// Instance kinds by SOP Class (src/dicom/sop-classes.ts): what patient control opens with
// 'images', 'reports' or 'key-images'. Checked by hand on each family, and against pydicom's
// UID dictionary (PS3.6 Table A-1 as pydicom ships it), so that no image class is left as 'other'.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { instanceKind } from '../../../src/dicom/sop-classes.ts';
import { requirePydicom } from '../../support/pydicom.ts';

const S = '1.2.840.10008.5.1.4.1.1.';

describe('instanceKind', () => {
  it('names the image classes of every modality, retired ones too', () => {
    for (const suffix of [
      '1',
      '1.1',
      '1.2',
      '2',
      '2.1',
      '3.1',
      '4',
      '4.1',
      '6.1',
      '7',
      '7.4',
      '12.1',
      '13.1.3',
      '20',
      '77.1.6',
      '77.1.5.4',
      '128',
      '130',
      '481.1',
      '66.4',
      '30',
      '3',
      '5',
      '6',
    ]) {
      expect(instanceKind(S + suffix), S + suffix).toBe('image');
    }
  });

  it('reports: SR documents (any under 88., even ones the standard adds later), PDF, CDA', () => {
    for (const suffix of ['88.11', '88.22', '88.33', '88.34', '88.35', '88.50', '88.67', '88.1', '88.99', '104.1', '104.2']) {
      expect(instanceKind(S + suffix), S + suffix).toBe('report');
    }
  });

  it('key objects: the Key Object Selection Document alone', () => {
    expect(instanceKind(`${S}88.59`)).toBe('key-object');
    expect(instanceKind(`${S}88.590`)).toBe('report');
  });

  it('other: presentation states, RT objects, raw data, waveforms, 3D models, private and malformed classes', () => {
    for (const uid of [
      `${S}11.1`, // Grayscale Softcopy Presentation State
      `${S}481.2`, // RT Dose
      `${S}481.3`, // RT Structure Set
      `${S}481.5`, // RT Plan
      `${S}66`, // Raw Data
      `${S}66.1`, // Spatial Registration
      `${S}9.1.1`, // 12-lead ECG
      `${S}104.3`, // Encapsulated STL
      `${S}104.4`, // Encapsulated OBJ
      `${S}4.2`, // MR Spectroscopy
      `${S}88.59.1`,
      `${S}88.`,
      '1.2.840.10008.5.1.4.38.1', // Hanging Protocol
      '1.3.46.670589.11.0.0.12.1', // a vendor's private class
      '',
    ]) {
      expect(instanceKind(uid), uid).toBe('other');
    }
  });

  it("agrees with pydicom's UID dictionary: every '... Image Storage' class is an image, every SR a report", () => {
    requirePydicom();
    const script = [
      'import json',
      'from pydicom._uid_dict import UID_dictionary as D',
      "print(json.dumps([[u, v[0]] for u, v in D.items() if v[1] == 'SOP Class' and 'Storage' in v[0]]))",
    ].join('\n');
    const classes = JSON.parse(execFileSync('/usr/bin/python3', ['-c', script], { encoding: 'utf8' })) as Array<[string, string]>;
    expect(classes.length).toBeGreaterThan(150);
    // Classes with Pixel Data whose names do not say "Image".
    const pixelsUnnamed = new Set([
      'Parametric Map Storage',
      'Segmentation Storage',
      'Enhanced US Volume Storage',
      'Ophthalmic Thickness Map Storage',
      'Corneal Topography Map Storage',
      'Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage',
    ]);
    const documents = new Set([
      'Encapsulated PDF Storage',
      'Encapsulated CDA Storage',
      'Spectacle Prescription Report Storage',
      'Macular Grid Thickness and Volume Report Storage',
    ]);
    const wrong: string[] = [];
    for (const [uid, name] of classes) {
      const expected =
        name.includes('Image Storage') || pixelsUnnamed.has(name)
          ? 'image'
          : name.startsWith('Key Object Selection')
            ? 'key-object'
            : / SR Storage|Procedure Log Storage/.test(name) || documents.has(name)
              ? 'report'
              : 'other';
      if (instanceKind(uid) !== expected) wrong.push(`${uid} ${name}: ${instanceKind(uid)}, expected ${expected}`);
    }
    expect(wrong).toEqual([]);
  });
});
