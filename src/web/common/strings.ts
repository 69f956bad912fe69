// Every word the pages show, in one place, English first: a translation is another object of the
// same shape (Strings), chosen by the page's language. Texts with values are functions, so a
// translation can put the values where its grammar wants them.

export const en = {
  appName: 'dicom-vault',
  patientTitle: 'Your imaging',
  loading: 'Loading…',
  working: 'Working…',
  skipToContent: 'Skip to content',

  // sign-in and enrollment
  signInTitle: 'Sign in',
  signInHelp: 'Use the passkey you created on this device (fingerprint, face or screen lock).',
  signInButton: 'Sign in with my passkey',
  enrollTitle: 'First time here?',
  enrollHelp: 'The hospital gave you an enrollment code. Enter it to create a passkey: it is how you sign in from now on, no password needed.',
  enrollCode: 'Enrollment code',
  enrollButton: 'Create my passkey',
  enrolled: 'Your passkey is ready. Sign in with it below.',
  sessionEnded: (reason: string) => `You have been signed out (${reason}). Please sign in again.`,
  signedOut: 'You are signed out.',
  sessionExpired: 'Your session has expired, so you have been signed out. Please sign in again.',
  signOut: 'Sign out',
  passkeyUnsupported: 'This browser cannot use passkeys. Please use a current Chrome, Edge, Firefox or Safari.',
  passkeysOff: 'This node is not set up for passkeys (it needs an https address). Ask the hospital.',
  passkeyCancelled: 'The passkey was not used (cancelled or timed out). Try again.',
  failed: (reason: string) => `That did not work: ${reason}`,

  // studies
  studiesTitle: 'Your studies',
  patientName: (name: string) => `Patient: ${name}`,
  noStudies: 'No studies are stored for you here yet.',
  noDescription: 'Study without a description',
  studyDate: 'Date',
  modality: 'Modality',
  bodyPart: 'Body part',
  images: 'Images',
  anchor: 'Integrity anchor',
  anchorConfirmed: (version: number | string) => `version ${version}: confirmed on chain`,
  anchorPending: (version: number | string) => `version ${version}: waiting for confirmation`,
  anchorOff: 'this node does not anchor studies',
  anchorUnknown: 'could not be checked',
  thumbnailOf: (what: string) => `Preview image of ${what}`,
  noThumbnail: 'No preview',
  unknown: 'unknown',
  seriesLabel: (modality: string, description: string, count: number | string) => `${modality} ${description} (${count} images)`,

  // who can see what
  accessTitle: 'Who can see your imaging',
  staffAccess:
    "The hospital's clinicians can see all of your studies, as the hospital's policy sets it. Every access, theirs included, is recorded in your audit log.",
  noGrants: 'You have not given anyone else access.',
  grantee: 'Who',
  scope: 'What',
  dataTypes: 'Kinds of data',
  window: 'When',
  status: 'Status',
  granteeUser: (id: string) => `Account ${id}`,
  granteeOidc: (subject: string, issuer: string) => `${subject} (${issuer})`,
  granteeLink: 'Anyone with the share link',
  scopeEverything: 'all your studies',
  scopeStudies: (names: string) => `the studies: ${names}`,
  scopeSeries: (names: string) => `the series: ${names}`,
  scopeModalities: (names: string) => `studies of modality ${names}`,
  windowFrom: (from: string, until: string) => `${from} until ${until}`,
  windowOpen: (from: string) => `from ${from}, until you revoke it`,
  statusNames: { active: 'active', pending: 'not started yet', expired: 'ended', revoked: 'revoked', invalid: 'not valid' } as Record<string, string>,
  revoke: 'Revoke',
  revokeFor: (who: string) => `Revoke access of ${who}`,
  revoked: (who: string) => `Access of ${who} is revoked, with immediate effect.`,

  // grant
  grantTitle: 'Give access',
  grantWho: 'Who gets access',
  grantToUser: 'A doctor or institution with an account here',
  grantAccount: 'Their account name',
  grantAccountHelp: 'The name the hospital gave them, for example dr.jones.',
  grantToLink: 'Anyone I give a link or QR code to',
  grantWhat: 'What they may see',
  grantEverything: 'Everything',
  grantStudy: 'One study',
  grantSeries: 'One series',
  grantPickStudy: 'Study',
  grantPickSeries: 'Series',
  grantKinds: 'Kinds of data',
  dataTypeNames: { images: 'images', metadata: 'technical details (metadata)', reports: 'reports', 'key-images': 'key images' } as Record<string, string>,
  grantHowLong: 'For how long',
  durationVisit: 'One visit (the next hour)',
  durationWeek: 'A week',
  durationMonth: 'A month',
  durationForever: 'Until I revoke it',
  grantSummaryTitle: 'What this means',
  willSee: (who: string, what: string, kinds: string) => `${who} will see ${kinds} of ${what}, and may search and view them.`,
  willSeeUntil: (when: string) => `Access ends ${when}, or earlier if you revoke it.`,
  willSeeForever: 'Access lasts until you revoke it.',
  willNotSee: (what: string) => `They will not see ${what}.`,
  willNotDownload: 'They cannot download copies, change or delete anything, or pass access on.',
  notOtherStudies: 'your other studies and series',
  notKinds: (kinds: string) => `your ${kinds}`,
  whoUser: (id: string) => `Account ${id}`,
  whoLink: 'Whoever opens the link',
  whoNobody: 'The person you name',
  durationEnds: { visit: 'in one hour', week: 'in a week', month: 'in a month' } as Record<string, string>,
  grantButton: 'Sign with my passkey and give access',
  grantNeedsAccount: 'Enter the account name of the doctor or institution.',
  grantNeedsKind: 'Choose at least one kind of data.',
  grantDone: (who: string) => `Access given to ${who}.`,

  // share link
  shareTitle: 'Share link',
  shareHelp: (until: string) => `Give this link or let them scan the code. It works once, until ${until}.`,
  shareLinkLabel: 'Link',
  shareCopy: 'Copy link',
  shareCopied: 'Link copied.',
  shareQr: 'QR code of the share link',

  // erasure
  erasureTitle: 'Ask for erasure',
  erasureWhat:
    'Erasure destroys the keys of your studies, so that no copy of their images can be read again, then deletes their records and stored data here. You receive a signed certificate once it is done.',
  erasureNot:
    'It cannot be undone. It does not reach copies already given to others (another hospital, a download), and backups keep the data until they expire. The hospital may refuse, with a reason, where health law requires it to keep your records.',
  erasureScope: 'What to erase',
  erasureAll: 'Everything',
  erasureStudy: 'One study',
  erasureConfirm: 'I understand that this cannot be undone',
  erasureButton: 'Ask for erasure',
  erasureNeedsConfirm: 'Tick the box to confirm.',
  erasureSent: 'Your request is recorded. The hospital will decide on it.',
  erasureRequests: 'Your requests',
  erasureRow: (what: string, state: string, when: string) => `${what}: ${state} (asked ${when})`,
  erasureStates: { pending: 'waiting for a decision', refused: 'refused', approved: 'approved', done: 'done', failed: 'failed' } as Record<string, string>,
  erasureReason: (reason: string) => `Reason: ${reason}`,
  erasureEverything: 'everything',

  // audit log
  auditTitle: 'Who saw what',
  auditHelp: 'Every access to your imaging and every refused attempt, newest first.',
  auditEmpty: 'Nothing recorded yet.',
  auditNotChecked: 'not yet checked in this browser',
  auditSealed: 'details erased',
};

export type Strings = typeof en;

/** The strings for the page's language (only English so far). */
export function stringsFor(_lang: string): Strings {
  return en;
}
