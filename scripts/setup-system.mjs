#!/usr/bin/env node
// System programs the tests need, checked before `npm test` (the `pretest` script) and by .ci/run:
// redis-server (the fleet tests start their own, on a unix socket; no system service is used), Debian's
// python3-torch and python3-onnx (the on-the-card scripts at small scale) and python3-pil (Pillow, the reference of
// test/resize.test.ts), and
// a Vulkan driver that gives WebGPU (Dawn) an adapter, so the webgpu device is tested on every run.
// Debian 12's own Mesa (22.3) gives Dawn no adapter; Mesa 25 from bookworm-backports (lavapipe, on the CPU) does.
// As root on Debian this installs what is missing; otherwise it prints the exact commands and fails.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';

const BACKPORTS = '/etc/apt/sources.list.d/asgdiffusion-backports.list';
const COMMANDS = [
  `echo "deb http://deb.debian.org/debian bookworm-backports main" > ${BACKPORTS}`,
  'apt-get update',
  'apt-get install -y -t bookworm-backports libvulkan1 mesa-vulkan-drivers',
];

// The project's own device check (dist/node/runner/devices.js), which runs the WebGPU check in a process of its own:
// ONNX Runtime keeps the WebGPU instance of its first try for the life of a process, so a check in this process after
// installing the driver would still see the adapter missing. `refresh` runs it again after the install.
async function webgpuWorks() {
  const { checkAvailableDevices } = await import('../dist/node/runner/devices.js');
  const webgpu = (await checkAvailableDevices({ refresh: true })).find((d) => d.name === 'webgpu');
  return webgpu?.available ? { ok: true } : { ok: false, reason: webgpu?.note ?? 'this onnxruntime-node build has no WebGPU provider' };
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const isDebian = fs.existsSync('/etc/debian_version') && spawnSync('apt-get', ['--version']).status === 0;
const redisWorks = () => spawnSync('redis-server', ['--version']).status === 0;

if (!redisWorks()) {
  if (!isRoot || !isDebian) {
    process.stderr.write(
      'setup: redis-server is missing; the fleet tests (test/fleet*.test.ts) start their own. On Debian, as root:\n' +
        '  apt-get update\n  apt-get install -y redis-server\n' +
        'Elsewhere: install Redis >= 6.2 (or Valkey, whose redis-server works the same) so that `redis-server` is on the PATH.\n',
    );
    process.exit(1);
  }
  process.stderr.write('setup: installing redis-server for the fleet tests (each test starts its own; the service is not used)\n');
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', 'redis-server'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (!redisWorks()) {
    process.stderr.write('setup: redis-server still does not run after the install\n');
    process.exit(1);
  }
}

// Python with torch and onnx: the on-the-card scripts (scripts/device/) are run at small scale by
// test/card-script.test.ts; and Pillow, whose LANCZOS resize test/resize.test.ts compares the core's with.
// Debian's packages (torch 1.13, CPU; Pillow 9.4), not pip: the machine has no PyPI.
const torchWorks = () => spawnSync('/usr/bin/python3', ['-c', 'import torch, onnx, PIL'], { stdio: 'ignore' }).status === 0;
if (!torchWorks()) {
  if (!isRoot || !isDebian) {
    process.stderr.write(
      'setup: /usr/bin/python3 lacks torch, onnx or PIL (Pillow); test/card-script.test.ts runs scripts/device/ with torch and onnx,\n' +
        'test/resize.test.ts compares with Pillow. On Debian, as root:\n' +
        '  apt-get update\n  apt-get install -y python3-torch python3-onnx python3-pil\n',
    );
    process.exit(1);
  }
  process.stderr.write('setup: installing python3-torch, python3-onnx and python3-pil for the on-the-card script and resize tests\n');
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', 'python3-torch', 'python3-onnx', 'python3-pil'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (!torchWorks()) {
    process.stderr.write('setup: python3 still cannot import torch, onnx and PIL after the install\n');
    process.exit(1);
  }
}

let check = await webgpuWorks();
if (!check.ok) {
  if (!isRoot || !isDebian) {
    process.stderr.write(
      `setup: WebGPU has no adapter here (${check.reason}).\n` +
        'The tests run the webgpu device on a Vulkan driver. On Debian 12, as root:\n' +
        COMMANDS.map((c) => `  ${c}\n`).join('') +
        'Elsewhere: install a Vulkan driver (Mesa >= 25 lavapipe, or a GPU driver) and the Vulkan loader.\n',
    );
    process.exit(1);
  }
  process.stderr.write('setup: installing the Vulkan loader and Mesa 25 (bookworm-backports) for the webgpu tests\n');
  fs.writeFileSync(BACKPORTS, 'deb http://deb.debian.org/debian bookworm-backports main\n');
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', '-t', 'bookworm-backports', 'libvulkan1', 'mesa-vulkan-drivers'], {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  check = await webgpuWorks();
  if (!check.ok) {
    process.stderr.write(`setup: WebGPU still has no adapter after the install: ${check.reason}\n`);
    process.exit(1);
  }
}
