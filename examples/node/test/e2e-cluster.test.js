// The end-to-end tests of e2e.test.js on a 3-master Redis Cluster: the app
// reads and fills through the protocol's cluster form, the worker runs with
// REDIS_CLUSTER_ADDRS.
process.env.REDIS_MODE = 'cluster';
await import('./e2e.test.js');
