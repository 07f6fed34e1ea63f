/**
 * Where a verified image goes. The agent hands every installer an image that
 * has already matched its signed SHA-256; installers only deliver it.
 */
export interface InstallRequest {
  /** Path of the verified image in the agent's store. */
  imagePath: string;
  model: string;
  version: string;
  seq: number;
  /** Hex SHA-256 of the image. */
  sha256: string;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface Installer {
  readonly description: string;
  /** Where the image ends up, when that is a path (reported in `--json`). */
  readonly target?: string;
  /** Resolves once the image is installed; rejects with an error naming what failed. */
  install(req: InstallRequest): Promise<void>;
}
