/**
 * The camera bench's gateway stand-in: the camera service and the camera panel page (test/helpers/camera-harness.ts)
 * in a process of its own, so its CPU is the camera forwarding path alone.
 *   node --import tsx host.ts <httpPort> <camera config JSON>
 */
import { pino } from 'pino'
import { cameraSchema } from '../../../gateway/camera/config.ts'
import { startCameraHarness } from '../../../test/helpers/camera-harness.ts'

const [port, json] = process.argv.slice(2)
const config = cameraSchema.parse(JSON.parse(json ?? '{}'))
const harness = await startCameraHarness(config, pino({ level: 'warn' }), Number(port))
process.stdout.write(`ready ${harness.url}\n`)
const stop = (): void => { void harness.stop().then(() => process.exit(0)) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
