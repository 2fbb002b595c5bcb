// `node --import ./e2e-dns.mjs ...`: resolves every `*.e2e.internal` name to 127.0.0.1, so
// that a process (the PDS) can reach the app instances under their made-up https origin
// without any change to the machine (no /etc/hosts). Everything else resolves as usual.
// Node's net/tls (and so fetch) look `dns.lookup` up on the module at call time.
import dns from 'node:dns';

const SUFFIX = '.e2e.internal';
const lookup = dns.lookup;

dns.lookup = function e2eLookup(hostname, options, callback) {
  const cb = typeof options === 'function' ? options : callback;
  const opts =
    typeof options === 'function'
      ? {}
      : typeof options === 'number'
        ? { family: options }
        : (options ?? {});
  if (typeof hostname === 'string' && hostname.toLowerCase().endsWith(SUFFIX)) {
    const address = { address: '127.0.0.1', family: 4 };
    process.nextTick(() => (opts.all ? cb(null, [address]) : cb(null, address.address, 4)));
    return {};
  }
  return lookup.call(this, hostname, options, callback);
};
