// Stand-alone entry for the flash command, for bench use and tests:
//   npx tsx device-agent/serial/flash-main.ts flash --protocol stm32 --port /dev/ttyUSB0 app.bin
import { Command } from 'commander';
import { addFlashCommand } from './flash-command.js';

const program = new Command('fwcast-flash');
addFlashCommand(program);
await program.parseAsync(process.argv);
