import { Hl7v2Message } from '../facades/hl7v2/message.js';
import { mapMessage } from '../facades/hl7v2/inbound/map-message.js';
import { DEFAULT_MAPPING } from '../facades/hl7v2/inbound/mapping-config.js';
import { extractIndexRows } from '../src/fhir/search/extract.js';
import { initSearchDefinitions } from '../src/fhir/search/index.js';
initSearchDefinitions();
const oru = (n: number) => [`MSH|^~\\&|BENCH|LAB|CONFLUX|HOSP|20240102030405+0100||ORU^R01^ORU_R01|1-${n}|P|2.5.1`, `PID|1||B1-${n}^^^HOSP^MR||Bench^Pat||19800101|F`, `OBR|1|P1-${n}^EHR|F1-${n}^LAB|24331-1^Panel^LN|||20240102010000+0100||||||||||||||||||F`, ...Array.from({ length: 10 }, (_, i) => `OBX|${i + 1}|NM|${2000 + i}-${i}^Analyte ${i}^LN||${(Math.random() * 100).toFixed(1)}|mg/dL^mg/dL^UCUM|10-90|N|||F|||20240102020000+0100`)].join('\r');
const rs = Array.from({ length: 300 }, (_, i) => mapMessage(Hl7v2Message.parse(oru(i)), DEFAULT_MAPPING).bundle).flatMap((b) => b.entry!.map((e) => ({ ...e.resource!, id: 'x1', meta: { versionId: '1', lastUpdated: '2024-01-01T00:00:00Z' } })));
for (let k = 0; k < 20; k++) for (const r of rs) extractIndexRows(r as any);
