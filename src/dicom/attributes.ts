// The DICOM attributes the catalog and QIDO-RS know by keyword: their tag, VR and the query
// level (PS3.4 C.6) they belong to. Hand-written rather than taken from dcmjs's dictionary:
// that one is a 5,000-entry table behind the whole library, while queries only need the
// Patient/Study/Series keys and the common instance keys. Any other attribute can still be
// named by its tag (8 hex digits).

import type { Tag } from './model.ts';

/** Where an attribute lives: patient and study attributes are kept per study. */
export type AttributeLevel = 'patient' | 'study' | 'series' | 'instance';

export interface AttributeDefinition {
  tag: Tag;
  keyword: string;
  vr: string;
  level: AttributeLevel;
}

/** Tags used by name in code. */
export const TAGS = {
  SpecificCharacterSet: '00080005',
  SOPClassUID: '00080016',
  SOPInstanceUID: '00080018',
  StudyDate: '00080020',
  StudyTime: '00080030',
  AccessionNumber: '00080050',
  InstanceAvailability: '00080056',
  Modality: '00080060',
  ModalitiesInStudy: '00080061',
  SOPClassesInStudy: '00080062',
  ReferringPhysicianName: '00080090',
  TimezoneOffsetFromUTC: '00080201',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  RetrieveURL: '00081190',
  AvailableTransferSyntaxUID: '00083002',
  PatientName: '00100010',
  PatientID: '00100020',
  IssuerOfPatientID: '00100021',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  BodyPartExamined: '00180015',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  StudyID: '00200010',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  BitsAllocated: '00280100',
  PerformedProcedureStepStartDate: '00400244',
  PerformedProcedureStepStartTime: '00400245',
  RequestAttributesSequence: '00400275',
  PixelData: '7FE00010',
} as const satisfies Record<string, Tag>;

// [tag, keyword, VR, level]
const TABLE: ReadonlyArray<readonly [Tag, string, string, AttributeLevel]> = [
  // Patient (PS3.4 C.6.1.1.2)
  ['00100010', 'PatientName', 'PN', 'patient'],
  ['00100020', 'PatientID', 'LO', 'patient'],
  ['00100021', 'IssuerOfPatientID', 'LO', 'patient'],
  ['00100030', 'PatientBirthDate', 'DA', 'patient'],
  ['00100032', 'PatientBirthTime', 'TM', 'patient'],
  ['00100040', 'PatientSex', 'CS', 'patient'],
  ['00101000', 'OtherPatientIDs', 'LO', 'patient'],
  ['00101001', 'OtherPatientNames', 'PN', 'patient'],
  ['00102160', 'EthnicGroup', 'SH', 'patient'],
  ['00104000', 'PatientComments', 'LT', 'patient'],
  // Study (PS3.4 C.6.1.1.3, C.6.2.1.2)
  ['00080020', 'StudyDate', 'DA', 'study'],
  ['00080030', 'StudyTime', 'TM', 'study'],
  ['00080050', 'AccessionNumber', 'SH', 'study'],
  ['00080061', 'ModalitiesInStudy', 'CS', 'study'],
  ['00080062', 'SOPClassesInStudy', 'UI', 'study'],
  ['00080090', 'ReferringPhysicianName', 'PN', 'study'],
  ['00080201', 'TimezoneOffsetFromUTC', 'SH', 'study'],
  ['00081030', 'StudyDescription', 'LO', 'study'],
  ['00081060', 'NameOfPhysiciansReadingStudy', 'PN', 'study'],
  ['00081080', 'AdmittingDiagnosesDescription', 'LO', 'study'],
  ['00101010', 'PatientAge', 'AS', 'study'],
  ['00101020', 'PatientSize', 'DS', 'study'],
  ['00101030', 'PatientWeight', 'DS', 'study'],
  ['00102180', 'Occupation', 'SH', 'study'],
  ['001021B0', 'AdditionalPatientHistory', 'LT', 'study'],
  ['0020000D', 'StudyInstanceUID', 'UI', 'study'],
  ['00200010', 'StudyID', 'SH', 'study'],
  ['00201206', 'NumberOfStudyRelatedSeries', 'IS', 'study'],
  ['00201208', 'NumberOfStudyRelatedInstances', 'IS', 'study'],
  ['00321032', 'RequestingPhysician', 'PN', 'study'],
  ['00321060', 'RequestedProcedureDescription', 'LO', 'study'],
  // Series (PS3.4 C.6.1.1.4)
  ['00080021', 'SeriesDate', 'DA', 'series'],
  ['00080031', 'SeriesTime', 'TM', 'series'],
  ['00080060', 'Modality', 'CS', 'series'],
  ['00080070', 'Manufacturer', 'LO', 'series'],
  ['00080080', 'InstitutionName', 'LO', 'series'],
  ['00081010', 'StationName', 'SH', 'series'],
  ['0008103E', 'SeriesDescription', 'LO', 'series'],
  ['00081050', 'PerformingPhysicianName', 'PN', 'series'],
  ['00081090', 'ManufacturerModelName', 'LO', 'series'],
  ['00180015', 'BodyPartExamined', 'CS', 'series'],
  ['00180030', 'ProtocolName', 'LO', 'series'],
  ['00185100', 'PatientPosition', 'CS', 'series'],
  ['0020000E', 'SeriesInstanceUID', 'UI', 'series'],
  ['00200011', 'SeriesNumber', 'IS', 'series'],
  ['00200060', 'Laterality', 'CS', 'series'],
  ['00201209', 'NumberOfSeriesRelatedInstances', 'IS', 'series'],
  ['00400244', 'PerformedProcedureStepStartDate', 'DA', 'series'],
  ['00400245', 'PerformedProcedureStepStartTime', 'TM', 'series'],
  ['00400253', 'PerformedProcedureStepID', 'SH', 'series'],
  ['00400254', 'PerformedProcedureStepDescription', 'LO', 'series'],
  ['00400275', 'RequestAttributesSequence', 'SQ', 'series'],
  // Instance (PS3.4 C.6.1.1.5 and the common image attributes)
  ['00020010', 'TransferSyntaxUID', 'UI', 'instance'],
  ['00080005', 'SpecificCharacterSet', 'CS', 'instance'],
  ['00080008', 'ImageType', 'CS', 'instance'],
  ['00080012', 'InstanceCreationDate', 'DA', 'instance'],
  ['00080013', 'InstanceCreationTime', 'TM', 'instance'],
  ['00080016', 'SOPClassUID', 'UI', 'instance'],
  ['00080018', 'SOPInstanceUID', 'UI', 'instance'],
  ['00080022', 'AcquisitionDate', 'DA', 'instance'],
  ['00080023', 'ContentDate', 'DA', 'instance'],
  ['0008002A', 'AcquisitionDateTime', 'DT', 'instance'],
  ['00080032', 'AcquisitionTime', 'TM', 'instance'],
  ['00080033', 'ContentTime', 'TM', 'instance'],
  ['00080056', 'InstanceAvailability', 'CS', 'instance'],
  ['00081190', 'RetrieveURL', 'UR', 'instance'],
  ['00083002', 'AvailableTransferSyntaxUID', 'UI', 'instance'],
  ['00180050', 'SliceThickness', 'DS', 'instance'],
  ['00200012', 'AcquisitionNumber', 'IS', 'instance'],
  ['00200013', 'InstanceNumber', 'IS', 'instance'],
  ['00200020', 'PatientOrientation', 'CS', 'instance'],
  ['00200032', 'ImagePositionPatient', 'DS', 'instance'],
  ['00200037', 'ImageOrientationPatient', 'DS', 'instance'],
  ['00200052', 'FrameOfReferenceUID', 'UI', 'instance'],
  ['00201041', 'SliceLocation', 'DS', 'instance'],
  ['00280002', 'SamplesPerPixel', 'US', 'instance'],
  ['00280004', 'PhotometricInterpretation', 'CS', 'instance'],
  ['00280008', 'NumberOfFrames', 'IS', 'instance'],
  ['00280010', 'Rows', 'US', 'instance'],
  ['00280011', 'Columns', 'US', 'instance'],
  ['00280030', 'PixelSpacing', 'DS', 'instance'],
  ['00280100', 'BitsAllocated', 'US', 'instance'],
  ['00280101', 'BitsStored', 'US', 'instance'],
  ['00280102', 'HighBit', 'US', 'instance'],
  ['00280103', 'PixelRepresentation', 'US', 'instance'],
  ['00281050', 'WindowCenter', 'DS', 'instance'],
  ['00281051', 'WindowWidth', 'DS', 'instance'],
  ['0040A043', 'ConceptNameCodeSequence', 'SQ', 'instance'],
  ['0040A491', 'CompletionFlag', 'CS', 'instance'],
  ['0040A493', 'VerificationFlag', 'CS', 'instance'],
  ['00700080', 'ContentLabel', 'CS', 'instance'],
  ['00700081', 'ContentDescription', 'LO', 'instance'],
  ['7FE00010', 'PixelData', 'OW', 'instance'],
];

const BY_TAG = new Map<Tag, AttributeDefinition>();
const BY_KEYWORD = new Map<string, AttributeDefinition>();
for (const [tag, keyword, vr, level] of TABLE) {
  const def: AttributeDefinition = { tag, keyword, vr, level };
  BY_TAG.set(tag, def);
  BY_KEYWORD.set(keyword, def);
}

const TAG_RE = /^[0-9A-Fa-f]{8}$/;

export function attributeByTag(tag: Tag): AttributeDefinition | undefined {
  return BY_TAG.get(tag.toUpperCase());
}

export function attributeByKeyword(keyword: string): AttributeDefinition | undefined {
  return BY_KEYWORD.get(keyword);
}

/** Attributes at a level, in tag order. */
export function attributesAt(level: AttributeLevel): AttributeDefinition[] {
  return [...BY_TAG.values()].filter((d) => d.level === level).sort((a, b) => (a.tag < b.tag ? -1 : 1));
}

/**
 * Resolves a query/includefield key: a keyword ('PatientID') or a tag ('00100020', any
 * case). Returns the upper-case tag and its definition when known; undefined when the key
 * is neither a known keyword nor 8 hex digits.
 */
export function resolveAttributeKey(key: string): { tag: Tag; definition: AttributeDefinition | undefined } | undefined {
  if (TAG_RE.test(key)) {
    const tag = key.toUpperCase();
    return { tag, definition: BY_TAG.get(tag) };
  }
  const def = BY_KEYWORD.get(key);
  return def === undefined ? undefined : { tag: def.tag, definition: def };
}

/** True for the study-level part of the catalog: patient and study attributes. */
export function isStudyLevel(level: AttributeLevel): boolean {
  return level === 'patient' || level === 'study';
}
