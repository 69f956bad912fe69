// vitest setup file (integration and bench projects): requests to the nodes tests start carry
// their tokens (test/support/auth.ts).
import { installTokenInjection } from './auth.ts';

installTokenInjection();
