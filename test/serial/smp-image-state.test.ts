// The image state command's body and answers (SMP group 1, id 0): the bytes
// we send, and what we accept from a device, including hostile answers.
import test from 'ava';
import fc from 'fast-check';
import { decodeImageStates, imageStateWrite } from '../../device-agent/serial/smp-image-state.js';
import { decodeCborMap, encodeCbor, MalformedSmpPacketError } from '../../device-agent/serial/smp-frame.js';
import { checkRc } from '../../device-agent/serial/mcuboot-smp.js';
import { BootloaderProtocolError, BootloaderRefusedError } from '../../device-agent/serial/bootloader-error.js';
import { run } from '../helpers/fuzz.js';

const hash = new Uint8Array(32).map((_, i) => i);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('image state write: test by hash, confirm without one, as mcumgr sends them', (t) => {
  // {"hash": h'00…1f', "confirm": false}
  t.is(hex(encodeCbor(imageStateWrite({ hash, confirm: false }))), `a2646861736858 20${hex(hash)}67636f6e6669726df4`.replace(' ', ''));
  // {"confirm": true}: never a hash, which would confirm that image wherever it sits.
  t.is(hex(encodeCbor(imageStateWrite({ confirm: true }))), 'a167636f6e6669726df5');
  t.throws(() => imageStateWrite({ confirm: false }), { instanceOf: RangeError, message: /needs its hash/ });
  t.throws(() => imageStateWrite({ hash: new Uint8Array(31), confirm: false }), { instanceOf: RangeError, message: /32, 48 or 64 bytes, not 31/ });
});

test('image state answer: a Zephyr list (indefinite-length, every flag) decodes to both slots', (t) => {
  const answer = encodeCbor({
    images: [
      { slot: 0, version: '1.0.1', hash, bootable: true, pending: false, confirmed: false, active: true, permanent: false },
      { slot: 1, version: '1.0.0', hash: new Uint8Array(32).fill(9), bootable: true, pending: false, confirmed: true, active: false, permanent: false },
    ],
    splitStatus: 0,
  }, true);
  const states = decodeImageStates('Image list', decodeCborMap(answer));
  t.deepEqual(states.map((s) => [s.image, s.slot, s.version, s.active, s.confirmed, s.pending]), [[0, 0, '1.0.1', true, false, false], [0, 1, '1.0.0', false, true, false]]);
  t.is(hex(states[0]!.hash!), hex(hash));
  // Frugal lists leave false flags and the image number out.
  t.like(decodeImageStates('Image list', { images: [{ slot: 1, hash, pending: true }] })[0], { image: 0, slot: 1, pending: true, confirmed: false, active: false });
});

test('image state answer: hostile shapes are protocol errors naming the field, never a guess', (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{}, /no images array/],
    [{ images: 'all' }, /no images array/],
    [{ images: new Array(17).fill({ slot: 0 }) }, /lists 17 slots, more than 16/],
    [{ images: [7] }, /images\[0\] is not a map/],
    [{ images: [new Uint8Array(4)] }, /images\[0\] is not a map/],
    [{ images: [new Map<unknown, unknown>([[1, 2]])] }, /images\[0\] is not a map/],
    [{ images: [{ slot: '0' }] }, /images\[0\]\.slot is not a slot number/],
    [{ images: [{ slot: -1 }] }, /slot is not a slot number/],
    [{ images: [{ slot: 1.5 }] }, /slot is not a slot number/],
    [{ images: [{ slot: 0, image: 300 }] }, /image is not an image number/],
    [{ images: [{ slot: 0 }, { slot: 0 }] }, /lists image 0 slot 0 twice/],
    [{ images: [{ slot: 0, hash: new Uint8Array(31) }] }, /hash is not a 32, 48 or 64-byte string/],
    [{ images: [{ slot: 0, hash: hex(hash) }] }, /hash is not a 32, 48 or 64-byte string/],
    [{ images: [{ slot: 0, version: 1 }] }, /version is not a version string/],
    [{ images: [{ slot: 0, version: 'x'.repeat(33) }] }, /version is not a version string/],
    [{ images: [{ slot: 0, active: 1 }] }, /active is not true or false/],
    [{ images: [{ slot: 0, confirmed: 'yes' }] }, /confirmed is not true or false/],
  ];
  for (const [answer, message] of cases) {
    t.throws(() => decodeImageStates('Image list', answer), { instanceOf: BootloaderProtocolError, message }, JSON.stringify(answer, (_, v) => (v instanceof Uint8Array ? `bytes(${v.length})` : v)));
  }
});

test('image state answer: group errors in err {group, rc} are refusals naming the image group code; a malformed err is a protocol error', (t) => {
  const refused = t.throws(() => checkRc('Image test', { err: { group: 1, rc: 28 } }), { instanceOf: BootloaderRefusedError });
  t.is(refused!.message, 'Image test was refused: group 1 rc 28 (IMAGE_ALREADY_PENDING)');
  t.is(refused!.returnCode, 28);
  t.notThrows(() => checkRc('Image test', { err: { group: 1, rc: 0 } }));
  t.throws(() => checkRc('Image test', { err: 28 }), { instanceOf: BootloaderProtocolError, message: /err is not \{group, rc\}/ });
  t.throws(() => checkRc('Image test', { err: { group: '1', rc: 28 } }), { instanceOf: BootloaderProtocolError });
});

test('image state answer from random and mutated bytes: a list of well-formed slots or a typed error, nothing else', (t) => {
  const valid = encodeCbor({ images: [{ slot: 0, version: '1.0.0', hash, bootable: true, active: true, confirmed: true }, { slot: 1, hash, pending: true }], splitStatus: 0 }, true);
  const cut = fc.oneof({ arbitrary: fc.constant(valid.length), weight: 4 }, { arbitrary: fc.nat(valid.length), weight: 1 });
  const mutated = fc.tuple(fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }), cut)
    .map(([edits, cut]) => {
      const bytes = new Uint8Array(valid);
      for (const [at, value] of edits) bytes[at] = value;
      return bytes.subarray(0, Math.max(1, cut));
    });
  const bytes = fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated);
  let decoded = 0;
  fc.assert(fc.property(bytes, (payload) => {
    let states;
    try {
      states = decodeImageStates('Image list', decodeCborMap(payload));
    } catch (error) {
      if (error instanceof MalformedSmpPacketError || error instanceof BootloaderProtocolError) return true;
      throw error;
    }
    decoded++;
    for (const s of states) {
      if (!Number.isInteger(s.slot) || s.slot < 0 || s.slot > 255) return false;
      if (s.hash !== undefined && ![32, 48, 64].includes(s.hash.length)) return false;
      if (s.version !== undefined && typeof s.version !== 'string') return false;
      if (![s.active, s.confirmed, s.pending, s.permanent, s.bootable].every((f) => typeof f === 'boolean')) return false;
    }
    return new Set(states.map((s) => `${s.image}/${s.slot}`)).size === states.length;
  }), run(3000));
  t.log(`${decoded} of 3000 inputs decoded to slot lists`);
  t.true(decoded > 0, 'some mutations still decode: the property saw lists, not only errors');
});
