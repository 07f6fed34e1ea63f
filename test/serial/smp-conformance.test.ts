// Conformance against the byte-exact recording of the real MCUboot serial
// recovery (a copy of shared/context/mcuboot-serial-recovery-transcript.json in fixtures/):
//  - our emulator answers every recorded request with the recorded bytes;
//  - our client sends the recorded request bytes and reads the recorded answers.
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { createLinkPair, type SerialLink } from '../../device-agent/serial/link.js';
import { checkRc, McubootClient, SMP } from '../../device-agent/serial/mcuboot-smp.js';
import { BootloaderRefusedError } from '../../device-agent/serial/bootloader-error.js';
import { parseMcubootImage } from '../../device-agent/serial/mcuboot-image.js';
import { SmpOp, type CborValue } from '../../device-agent/serial/smp-frame.js';
import { SmpEmulator } from '../../hardware/emulators/smp-emulator.js';
import { memoryFlash } from '../../hardware/emulators/flash-file.js';

interface Side { raw_hex: string | null; header?: { seq: number; op: number; group: number; id: number }; cbor?: unknown }
interface Exchange { name: string; session: 'A' | 'B' | 'C'; request: Side & { malformation?: string; not_decodable_as_sent?: boolean }; response: Side | null }
interface Transcript { image: string; image_layout: { tlv_area: { tlvs: { value_hex: string }[] } }; exchanges: Exchange[] }

const TRANSCRIPT_PATH = new URL('./fixtures/mcuboot-serial-recovery-transcript.json', import.meta.url);

function loadTranscript(): Transcript {
  if (!existsSync(TRANSCRIPT_PATH)) throw new Error(`transcript fixture missing at ${TRANSCRIPT_PATH.pathname} (shared/ must sit beside the repo)`);
  return JSON.parse(readFileSync(TRANSCRIPT_PATH, 'utf8')) as Transcript;
}

const transcript = loadTranscript();
const byName = (name: string): Exchange => {
  const e = transcript.exchanges.find((x) => x.name === name);
  if (!e) throw new Error(`no exchange ${name} in transcript`);
  return e;
};

test('the recorded image is what MCUboot listed: our image parser finds the same SHA-256 TLV and version', (t) => {
  const info = parseMcubootImage(Buffer.from(transcript.image, 'hex'));
  t.true(info.hashValid);
  t.is(Buffer.from(info.sha256Tlv).toString('hex'), transcript.image_layout.tlv_area.tlvs[0]!.value_hex);
  t.is(info.version, '1.2.3.4');
});

test('emulator answers all 42 recorded requests with the recorded bytes (or, like MCUboot, not at all)', (t) => {
  // Session B starts erased; A is a rebuilt device (no hash, no params) on B's flash; C is fresh.
  const sharedFlash = memoryFlash(256 * 1024);
  const devices: Record<string, SmpEmulator> = {
    B: new SmpEmulator({ flash: sharedFlash }),
    A: new SmpEmulator({ flash: sharedFlash, reportImageHash: false, mcumgrParams: false }),
    C: new SmpEmulator(),
  };
  t.is(transcript.exchanges.length, 42);
  for (const exchange of transcript.exchanges) {
    const device = devices[exchange.session]!;
    const raw = Buffer.from(exchange.request.raw_hex!, 'hex');
    const out: Buffer[] = [];
    let start = 0;
    for (let i = 0; i < raw.length; i++) {
      if (raw[i] !== 0x0a) continue;
      const { response } = device.receiveLine(raw.subarray(start, i));
      if (response) out.push(Buffer.from(response));
      start = i + 1;
    }
    const got = out.length ? Buffer.concat(out).toString('hex') : null;
    t.is(got, exchange.response?.raw_hex ?? null, exchange.name);
  }
});

/** Plays the recorded device: expects the recorded request bytes, answers with the recorded response. */
async function recordedDevice(device: SerialLink, exchange: Exchange): Promise<string> {
  const request = Buffer.from(exchange.request.raw_hex!, 'hex');
  const got = Buffer.from(await device.read(request.length, { timeoutMs: 2000 }));
  if (exchange.response?.raw_hex) await device.write(Buffer.from(exchange.response.raw_hex, 'hex'));
  return got.toString('hex');
}

async function replay<T>(name: string, call: (client: McubootClient) => Promise<T>): Promise<{ sent: string; expected: string; result: T }> {
  const exchange = byName(name);
  const [host, device] = createLinkPair();
  const client = new McubootClient({ link: host, firstSeq: exchange.request.header!.seq, tries: 1, timeoutMs: 1000 });
  const [sent, result] = await Promise.all([recordedDevice(device, exchange), call(client)]);
  await host.close();
  return { sent, expected: exchange.request.raw_hex!, result };
}

test('client: echo, params and image lists are sent byte-identical to the recording and parsed from MCUboot\'s answers', async (t) => {
  const echo = await replay('echo', (c) => c.echo('hello'));
  t.is(echo.sent, echo.expected);
  t.is(echo.result, 'hello');

  const params = await replay('mcumgr_params', (c) => c.bufferSize());
  t.is(params.sent, params.expected);
  t.is(params.result, 1024);

  const noParams = await replay('mcumgr_params_unsupported', (c) => c.bufferSize());
  t.is(noParams.sent, noParams.expected);
  t.is(noParams.result, undefined, 'rc 8 means "use defaults"');

  const empty = await replay('image_list_empty', (c) => c.imageList());
  t.is(empty.sent, empty.expected);
  t.deepEqual(empty.result, []);

  const listed = await replay('image_list_after_upload', (c) => c.imageList());
  t.is(listed.sent, listed.expected);
  t.is(listed.result.length, 1);
  const slot0 = listed.result[0]!;
  t.is(slot0.slot, 0);
  t.is(slot0.version, '1.2.3.4');
  t.is(Buffer.from(slot0.hash!).toString('hex'), transcript.image_layout.tlv_area.tlvs[0]!.value_hex);
  t.true(slot0.bootable && slot0.confirmed && slot0.active);
  t.false(slot0.pending || slot0.permanent);

  const noHash = await replay('image_list_without_hash_option', (c) => c.imageList());
  t.is(noHash.result[0]!.hash, undefined);
  t.is(noHash.result[0]!.version, '1.2.3.4');

  const noSlotInfo = await replay('image_slot_info_not_built', (c) => c.slotInfo());
  t.is(noSlotInfo.sent, noSlotInfo.expected);
  t.is(noSlotInfo.result, undefined, 'rc 8: the size comes from configuration');

  const reset = await replay('reset', (c) => c.reset());
  t.is(reset.sent, reset.expected);
  t.true(reset.result);
});

test('client: upload requests match the recording and the device\'s off is what the client follows', async (t) => {
  const image = Buffer.from(transcript.image, 'hex');
  const sha = Buffer.from((byName('upload_chunk_off_0').request.cbor as { sha: { __bytes_hex: string } }).sha.__bytes_hex, 'hex');
  const upload = (off: number, data: Uint8Array, first = false): ((c: McubootClient) => Promise<Record<string, unknown>>) => (c) => {
    const body: { [key: string]: CborValue } = first ? { image: 0, len: image.length, off, sha, data } : { off, data };
    return c.command(`Image upload at off ${off}`, SmpOp.Write, SMP.GROUP_IMAGE, SMP.IMAGE_UPLOAD, body);
  };
  const first = await replay('upload_chunk_off_0', upload(0, image.subarray(0, 512), true));
  t.is(first.sent, first.expected);
  t.deepEqual(first.result, { rc: 0, off: 512 });

  const skip = await replay('upload_off_skip_ahead', upload(2048, image.subarray(2048, 2560)));
  t.is(skip.sent, skip.expected);
  t.deepEqual(skip.result, { rc: 0, off: 1024 }, 'mismatch answered with rc 0 and the offset the device expects');

  const unaligned = await replay('upload_chunk_off_1536_unaligned_500', upload(1536, image.subarray(1536, 2036)));
  t.is(unaligned.sent, unaligned.expected);
  t.deepEqual(unaligned.result, { rc: 0, off: 2032 }, 'device wrote only 496 aligned bytes');

  const last = await replay('upload_chunk_off_3568_last', upload(3568, image.subarray(3568)));
  t.deepEqual(last.result, { rc: 0, off: image.length });

  const pastEnd = await replay('upload_past_end', upload(4075, new Uint8Array(16).fill(0xff)));
  t.is(pastEnd.sent, pastEnd.expected);
  const error = t.throws(() => checkRc('Image upload at off 4075', pastEnd.result), { instanceOf: BootloaderRefusedError });
  t.is(error?.message, 'Image upload at off 4075 was refused: rc 3 (EINVAL)');
  t.like(error, { protocol: 'mcuboot', operation: 'Image upload at off 4075', returnCode: 3 });
});

test('client: a dropped request (bad CRC on the line) is re-sent and the retry is answered', async (t) => {
  // MCUboot answers nothing to a corrupted frame; the client must not wait forever or give up at once.
  const exchange = byName('echo_after_bad_crc');
  const [host, device] = createLinkPair();
  // Each try has its own sequence number: the lost first try is seq 15 (as echo_bad_crc was recorded), the retry 16.
  const client = new McubootClient({ link: host, firstSeq: exchange.request.header!.seq - 1, tries: 3, timeoutMs: 150 });
  const deviceSide = (async () => {
    const request = Buffer.from(exchange.request.raw_hex!, 'hex');
    await device.read(request.length, { timeoutMs: 2000 }); // first try: "lost"
    const again = Buffer.from(await device.read(request.length, { timeoutMs: 2000 }));
    await device.write(Buffer.from(exchange.response!.raw_hex!, 'hex'));
    return again.toString('hex');
  })();
  t.is(await client.echo('hello'), 'hello');
  t.is(await deviceSide, exchange.request.raw_hex!);
  t.is(client.retries, 1);
  await host.close();
});
