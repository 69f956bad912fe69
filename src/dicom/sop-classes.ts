// What kind of object an instance is, by its SOP Class: what patient control opens or keeps
// closed (src/catalog/scope.ts). The catalog stores each instance's kind (an indexed column, filled
// at commit and by the migration that introduced it), so a change to these lists reaches
// instances stored before it only through a new catalog migration that re-derives the column
// (`UPDATE instances SET kind = dv_instance_kind(sop_class_uid)`).
//
//   image       Storage SOP Classes whose IODs carry Pixel Data (or Float / Double Float Pixel
//               Data): PS3.4 B.5's image classes, retired ones too, with segmentations and
//               parametric maps, whose pixels are images derived from images
//   report      Structured Reports (1.2.840.10008.5.1.4.1.1.88.*, KOS excepted), Encapsulated PDF
//               and CDA, and the two ophthalmic "report" IODs a reader reads as documents
//   key-object  Key Object Selection Document (the "key images" a radiologist flags)
//   other       everything else: presentation states, RT plans, structure sets and doses,
//               registrations, raw data, waveforms, measurements, surfaces and meshes (Encapsulated
//               STL, OBJ and MTL too: 3D models printed or viewed beside the images, not documents
//               a reader reads), protocols, private SOP Classes
//
// Hand-written: no package of the npm registry carries PS3.6's list with the IOD of each class
// (dcmjs names ~30 classes, dcmjs-dimse ~60, neither says which have pixels). The list follows
// PS3.6 Table A-1 as of 2024; test/unit/dicom/sop-classes.test.ts checks it against pydicom's
// UID dictionary, so a class added to the standard and named "... Image Storage" is not missed.

export type InstanceKind = 'image' | 'report' | 'key-object' | 'other';

export const KEY_OBJECT_SELECTION = '1.2.840.10008.5.1.4.1.1.88.59';

const S = '1.2.840.10008.5.1.4.1.1.';

/** Storage SOP Classes whose instances carry Pixel Data (PS3.4 B.5, PS3.6 A-1). */
const IMAGE = new Set<string>([
  '1.2.840.10008.5.1.1.29', // Hardcopy Grayscale Image (retired)
  '1.2.840.10008.5.1.1.30', // Hardcopy Color Image (retired)
  ...[
    '1', // Computed Radiography
    '1.1', // Digital X-Ray - For Presentation
    '1.1.1', // Digital X-Ray - For Processing
    '1.2', // Digital Mammography X-Ray - For Presentation
    '1.2.1', // Digital Mammography X-Ray - For Processing
    '1.3', // Digital Intra-Oral X-Ray - For Presentation
    '1.3.1', // Digital Intra-Oral X-Ray - For Processing
    '2', // CT
    '2.1', // Enhanced CT
    '2.2', // Legacy Converted Enhanced CT
    '3', // Ultrasound Multi-frame (retired)
    '3.1', // Ultrasound Multi-frame
    '4', // MR
    '4.1', // Enhanced MR
    '4.3', // Enhanced MR Color
    '4.4', // Legacy Converted Enhanced MR
    '5', // Nuclear Medicine (retired)
    '6', // Ultrasound (retired)
    '6.1', // Ultrasound
    '6.2', // Enhanced US Volume
    '6.3', // Photoacoustic
    '7', // Secondary Capture
    '7.1', // Multi-frame Single Bit Secondary Capture
    '7.2', // Multi-frame Grayscale Byte Secondary Capture
    '7.3', // Multi-frame Grayscale Word Secondary Capture
    '7.4', // Multi-frame True Color Secondary Capture
    '12.1', // X-Ray Angiographic
    '12.1.1', // Enhanced XA
    '12.2', // X-Ray Radiofluoroscopic
    '12.2.1', // Enhanced XRF
    '12.3', // X-Ray Angiographic Bi-Plane (retired)
    '13.1.1', // X-Ray 3D Angiographic
    '13.1.2', // X-Ray 3D Craniofacial
    '13.1.3', // Breast Tomosynthesis
    '13.1.4', // Breast Projection X-Ray - For Presentation
    '13.1.5', // Breast Projection X-Ray - For Processing
    '14.1', // Intravascular OCT - For Presentation
    '14.2', // Intravascular OCT - For Processing
    '20', // Nuclear Medicine
    '30', // Parametric Map
    '66.4', // Segmentation
    '66.7', // Label Map Segmentation
    '66.8', // Height Map Segmentation
    '77.1', // VL Image - Trial (retired)
    '77.1.1', // VL Endoscopic
    '77.1.1.1', // Video Endoscopic
    '77.1.2', // VL Microscopic
    '77.1.2.1', // Video Microscopic
    '77.1.3', // VL Slide-Coordinates Microscopic
    '77.1.4', // VL Photographic
    '77.1.4.1', // Video Photographic
    '77.1.5.1', // Ophthalmic Photography 8 Bit
    '77.1.5.2', // Ophthalmic Photography 16 Bit
    '77.1.5.4', // Ophthalmic Tomography
    '77.1.5.5', // Wide Field Ophthalmic Photography Stereographic Projection
    '77.1.5.6', // Wide Field Ophthalmic Photography 3D Coordinates
    '77.1.5.7', // Ophthalmic OCT En Face
    '77.1.5.8', // Ophthalmic OCT B-scan Volume Analysis
    '77.1.6', // VL Whole Slide Microscopy
    '77.1.7', // Dermoscopic Photography
    '77.1.8', // Confocal Microscopy
    '77.1.9', // Confocal Microscopy Tiled Pyramidal
    '77.2', // VL Multi-frame - Trial (retired)
    '81.1', // Ophthalmic Thickness Map
    '82.1', // Corneal Topography Map
    '128', // Positron Emission Tomography
    '128.1', // Legacy Converted Enhanced PET
    '130', // Enhanced PET
    '481.1', // RT Image
    '481.23', // Enhanced RT Image
    '481.24', // Enhanced Continuous RT Image
    '501.1', // DICOS CT
    '501.2.1', // DICOS Digital X-Ray - For Presentation
    '501.2.2', // DICOS Digital X-Ray - For Processing
    '601.1', // Eddy Current
    '601.2', // Eddy Current Multi-frame
  ].map((suffix) => S + suffix),
]);

/** Documents a reader reads, besides the Structured Reports (all of 88.* but the KOS). */
const DOCUMENTS = new Set<string>([
  `${S}78.6`, // Spectacle Prescription Report
  `${S}79.1`, // Macular Grid Thickness and Volume Report (an SR document IOD under another arc)
  `${S}104.1`, // Encapsulated PDF
  `${S}104.2`, // Encapsulated CDA
]);

const SR_ARC = `${S}88.`;

/** The kind of an instance of `sopClassUID`; unknown and private classes are 'other'. */
export function instanceKind(sopClassUID: string): InstanceKind {
  if (IMAGE.has(sopClassUID)) return 'image';
  if (sopClassUID === KEY_OBJECT_SELECTION) return 'key-object';
  if (DOCUMENTS.has(sopClassUID)) return 'report';
  // Every class under 88. is an SR document (Basic Text, Enhanced, Comprehensive, CAD, dose...),
  // now and as the standard adds them; the KOS is the one handled above.
  if (sopClassUID.startsWith(SR_ARC) && /^\d+$/.test(sopClassUID.slice(SR_ARC.length))) return 'report';
  return 'other';
}
