/** Patient–device association and the quarantine of held readings (used by facades/serial and facades/hl7v2). */
export {
  resolveAssociation,
  explainAssociation,
  associate,
  release,
  listAssociations,
  findDeviceIds,
  findLocationIds,
  ASSOCIATION_LOCATION_EXTENSION,
} from './association.js';
export type { AssociationQuery, ResolvedAssociation, AssociationExplanation, AssociationView, DeviceDeps } from './association.js';
export { holdForAssociation, assignHeld, discardHeld, listHeld, getHeld, countHeld, bundleForPatient } from './quarantine.js';
export type { HoldInput, HeldReading } from './quarantine.js';
export { addDevice, listDevices, addLocation, listLocations, normalizeEui64 } from './registry.js';
export type { AddDeviceInput, DeviceView, AddLocationInput } from './registry.js';
export { EUI64_SYSTEM, SERIAL_NUMBER_SYSTEM, SERIAL_PORT_SYSTEM, normalizeIdentifiers } from './identifiers.js';
export { deviceStore } from './repo-port.js';
export type { DeviceStore, Actor } from './repo-port.js';
export { countReadings, readingCounters } from './counters.js';
export { deviceAdminRouter } from './admin-routes.js';
