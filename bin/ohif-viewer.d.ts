// Types of bin/ohif-viewer.js (plain JavaScript: it runs on whichever Node runs npm's scripts).
export interface ViewerRelease {
  version: string;
  tarball: string;
  integrity: string;
  publicPath: string;
  /** Changes to the extraction step: an extraction made by another one is redone. */
  extraction?: number;
}
export const MARKER: string;
export function installViewer(options?: { release?: ViewerRelease; viewerDir?: string; log?: (message: string) => void }): Promise<'present' | 'installed'>;
