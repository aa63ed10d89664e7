// The configuration `mailraven serve --embedded-config` runs with: everything on loopback,
// unprivileged ports, state under ./data, and mail for example.test handed to a local sink
// (`mailraven sink`) so a first-time user can watch a message go through.

export const EMBEDDED_CONFIG = `# mailraven embedded default: a local trial, not a production setup.
hostname: mailraven.localhost
state_dir: ./data
smtp:
  listen: ["127.0.0.1:2525"]
  greeting_delay: 0s
relay:
  domains:
    example.test: smtp://127.0.0.1:2526
  relay_networks: [127.0.0.0/8, "::1/128"]
queue:
  retry_schedule: [10s, 30s, 1m, 5m]
`;
